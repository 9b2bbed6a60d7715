"""The tool path: AWS's ``nitro-tpm-attest`` utility, run as a child process.

``nitro-tpm-attest [--user-data FILE] [--nonce FILE] [--public-key FILE]`` writes the raw
CBOR document to stdout (``aws-nitro-tpm-tools`` on Amazon Linux 2023). The fields go into
files in a private temporary directory (mode 0700, removed afterwards), so ``argv`` (which
every user on the instance can read in ``/proc``) carries only their paths. The child gets
a minimal environment (``PATH``, and ``TPM_DEVICE`` when a device path is configured), no
stdin, a deadline (killed when it passes), and its stdout and stderr are read with caps;
a failure's message quotes a short, printable summary of stderr. The output is returned
unparsed: the provider checks it.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from attested.errors import AttestationUnavailable

TOOL_NAME = "nitro-tpm-attest"
MAX_STDOUT = 16384
"""More than any document (``Limits.max_document_size``); more output is refused."""
MAX_STDERR = 4096
_SUMMARY = 300
_SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def find_tool(path: str | None) -> str | None:
    """The tool to run: ``path`` if given (it must be an executable file), else the one on PATH.

    Raises:
        AttestationUnavailable: ``path`` is given but is not an executable file.
    """
    if path:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise AttestationUnavailable(f"{path} is not an executable file ({TOOL_NAME})")
        return path
    return shutil.which(TOOL_NAME)


class AttestTool:
    """Runs ``nitro-tpm-attest`` once per document.

    Args:
        path: the executable.
        timeout: seconds the tool may take.
        device_path: passed as ``TPM_DEVICE`` (the tool's default is ``/dev/tpm0``);
            ``None`` leaves it unset.
    """

    def __init__(self, path: str, *, timeout: float, device_path: str | None = None) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.path = path
        self.timeout = timeout
        self.device_path = device_path

    def run(
        self, *, user_data: bytes | None, nonce: bytes | None, public_key: bytes | None
    ) -> bytes:
        """Run the tool with the fields given and return what it wrote to stdout.

        Raises:
            AttestationUnavailable: it could not start, exited non-zero, took too long, or
                wrote too much.
        """
        fields = {"--user-data": user_data, "--nonce": nonce, "--public-key": public_key}
        with tempfile.TemporaryDirectory(prefix="attested-tpm-") as directory:
            os.chmod(directory, 0o700)
            argv = [self.path]
            for flag, value in fields.items():
                if value is None:
                    continue
                file = Path(directory) / flag.strip("-")
                descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(value)
                argv += [flag, str(file)]
            return self._run(argv)

    def _run(self, argv: list[str]) -> bytes:
        env = {"PATH": _SAFE_PATH, "LC_ALL": "C"}
        if self.device_path:
            env["TPM_DEVICE"] = self.device_path
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                close_fds=True,
                start_new_session=True,
            )
        except OSError as exc:
            raise AttestationUnavailable(
                f"could not run {self.path}: {os.strerror(exc.errno or 0)}"
            ) from exc
        try:
            stdout, stderr, problem = self._collect(process)
        finally:
            if process.poll() is None:
                _kill_group(process)
            process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        if problem:
            raise AttestationUnavailable(f"{TOOL_NAME} ({self.path}) {problem}{_said(stderr)}")
        if process.returncode != 0:
            raise AttestationUnavailable(
                f"{TOOL_NAME} ({self.path}) exited with status {process.returncode}{_said(stderr)}"
            )
        if not stdout:
            raise AttestationUnavailable(f"{TOOL_NAME} ({self.path}) wrote no document")
        return stdout

    def _collect(self, process: subprocess.Popen[bytes]) -> tuple[bytes, bytes, str]:
        """Read both pipes until they close, with caps and the deadline.

        Returns:
            stdout, stderr and ``""``, or a problem to report (then stdout is dropped).
        """
        assert process.stdout is not None  # noqa: S101
        assert process.stderr is not None  # noqa: S101
        out, err = process.stdout.fileno(), process.stderr.fileno()
        caps = {out: (MAX_STDOUT, "stdout"), err: (MAX_STDERR, "stderr")}
        got = {out: bytearray(), err: bytearray()}
        deadline = time.monotonic() + self.timeout
        late = f"did not finish within {self.timeout:g} s"
        with selectors.DefaultSelector() as selector:
            for fd in caps:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    return b"", bytes(got[err]), late
                for key, _ in selector.select(left):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        selector.unregister(key.fd)
                        continue
                    got[key.fd] += chunk
                    cap, name = caps[key.fd]
                    if len(got[key.fd]) > cap:
                        return (
                            b"",
                            bytes(got[err][:MAX_STDERR]),
                            f"wrote over {cap} bytes to {name}",
                        )
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return b"", bytes(got[err]), late
        return bytes(got[out]), bytes(got[err]), ""

    def __repr__(self) -> str:
        return f"<AttestTool {self.path!r}>"


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the tool and anything it started (its own session, so its own group)."""
    with contextlib.suppress(ProcessLookupError):  # it exited just now
        os.killpg(process.pid, signal.SIGKILL)


def _said(stderr: bytes) -> str:
    """A short, printable summary of the tool's stderr for an error message."""
    text = stderr.decode("utf-8", "replace").strip()
    text = "".join(c if c.isprintable() else " " for c in text)
    text = " ".join(text.split())
    if not text:
        return ""
    if len(text) > _SUMMARY:
        text = text[: _SUMMARY - 3] + "..."
    return f"; it said: {text}"
