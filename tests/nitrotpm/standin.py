"""A stand-in NitroTPM behind a real device path, and a stand-in ``nitro-tpm-attest``.

:class:`StandInTpm` speaks the TPM 2.0 wire protocol for the commands the provider sends
(GetCapability, NV_DefineSpace, NV_Write, NV_Read, NV_UndefineSpace and the AWS vendor
command), written here from TCG Part 2/3, not from the production marshalling. It answers
the vendor command as the hypervisor does: it decodes the NSM request CBOR held in the NV
index, asks a document source for the document, and writes the NSM response CBOR back
into the index. Faults are injected per command code.

:class:`PtyTpm` serves it on the master side of a pseudo-terminal in raw mode, in a
thread; the slave's path (``/dev/pts/N``) is the "device" the production code opens,
writes and polls unchanged.

:func:`write_tool` writes an executable Python script that behaves as ``nitro-tpm-attest``
(flags, files, stdout), getting its document from a file of canned answers.
"""

from __future__ import annotations

import io
import os
import selectors
import struct
import sys
import threading
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cbor2

SESSIONS, NO_SESSIONS = 0x8002, 0x8001
CC_UNDEFINE, CC_DEFINE, CC_WRITE, CC_READ, CC_GETCAP = 0x122, 0x12A, 0x137, 0x14E, 0x17A
CC_NSM = 0x20000001
RH_OWNER, RS_PW = 0x40000001, 0x40000009
RC_SUCCESS = 0
RC_COMMAND_CODE = 0x143
RC_NV_RANGE = 0x146
RC_NV_UNINITIALIZED = 0x14A
RC_NV_DEFINED = 0x14C
RC_HANDLE = 0x08B
RC_AUTH_FAIL = 0x98E  # TPM_RC_AUTH_FAIL on session 1 (format one)
RC_NV_SPACE = 0x14B


class DocumentSource(Protocol):
    def get_attestation_document(
        self,
        *,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes: ...


HANG = object()
"""A fault: never answer the command."""


@dataclass
class StandInTpm:
    """The TPM's state and its answers (no I/O)."""

    source: DocumentSource
    vendor: bytes = b"NitroTPM"
    nv_buffer_max: int = 1024
    occupied: set[int] = field(default_factory=set)
    """NV handles defined by "someone else" before we start."""
    faults: dict[int, object] = field(default_factory=dict)
    """Command code to a response code, :data:`HANG`, or raw bytes to answer with."""
    steal_next_define: int = 0
    """Answer this many NV_DefineSpace with NV_DEFINED (another process raced us)."""
    nsm_answer: Callable[[dict[str, bytes | None]], object] | None = None
    """Replace the NSM response object (for bad answers); gets the decoded request."""
    nv: dict[int, bytearray] = field(default_factory=dict)
    written: set[int] = field(default_factory=set)
    log: list[int] = field(default_factory=list)
    requests: list[dict[str, bytes | None]] = field(default_factory=list)

    def answer(self, command: bytes) -> bytes | None:
        """The response to one whole command, or ``None`` to hang."""
        tag, size, code = struct.unpack_from(">HII", command)
        assert size == len(command)
        self.log.append(code)
        fault = self.faults.get(code)
        if fault is HANG:
            return None
        if isinstance(fault, bytes):
            return fault
        if isinstance(fault, int):
            return _error(fault)
        body = command[10:]
        handler = {
            CC_GETCAP: self._getcap,
            CC_DEFINE: self._define,
            CC_WRITE: self._write,
            CC_READ: self._read,
            CC_UNDEFINE: self._undefine,
            CC_NSM: self._nsm,
        }.get(code)
        if handler is None:
            return _error(RC_COMMAND_CODE)
        if (tag == SESSIONS) != (code != CC_GETCAP):
            return _error(0x097)  # TPM_RC_TAG
        return handler(body)

    # -- commands ----------------------------------------------------------------------

    def _getcap(self, body: bytes) -> bytes:
        capability, prop, count = struct.unpack(">III", body)
        if capability == 6:  # TPM_CAP_TPM_PROPERTIES
            table = {
                0x106: int.from_bytes(self.vendor[:4].ljust(4, b"\0"), "big"),
                0x107: int.from_bytes(self.vendor[4:8].ljust(4, b"\0"), "big"),
                0x10D: self.nv_buffer_max,
            }
            chosen = [(p, v) for p, v in sorted(table.items()) if p >= prop][:count]
            data = struct.pack(">I", len(chosen)) + b"".join(struct.pack(">II", *i) for i in chosen)
            return _ok(struct.pack(">BI", 0, 6) + data, sessions=False)
        if capability == 1:  # TPM_CAP_HANDLES; pages of at most 2 to exercise moreData
            handles = sorted(h for h in (self.occupied | set(self.nv)) if h >= prop)
            page, more = handles[: min(count, 2)], len(handles) > min(count, 2)
            data = struct.pack(">I", len(page)) + b"".join(struct.pack(">I", h) for h in page)
            return _ok(struct.pack(">BI", int(more), 1) + data, sessions=False)
        return _error(0x084)  # TPM_RC_VALUE

    def _define(self, body: bytes) -> bytes:
        (auth_handle,) = struct.unpack_from(">I", body)
        rest = _skip_password(body[4:])
        if auth_handle != RH_OWNER or rest is None:
            return _error(RC_HANDLE)
        (auth_size,) = struct.unpack_from(">H", rest)
        assert auth_size == 0, "the provider defines indexes with an empty auth value"
        (public_size,) = struct.unpack_from(">H", rest, 2)
        public = rest[4 : 4 + public_size]
        index, name_alg, attributes, policy_size, data_size = struct.unpack(">IHIHH", public)
        assert name_alg == 0x000B
        assert attributes == (1 << 2) | (1 << 18)
        assert policy_size == 0
        if self.steal_next_define:
            self.steal_next_define -= 1
            self.occupied.add(index)
            return _error(RC_NV_DEFINED)
        if index in self.nv or index in self.occupied:
            return _error(RC_NV_DEFINED)
        if not 0x01000000 <= index <= 0x01FFFFFF:
            return _error(RC_HANDLE)
        self.nv[index] = bytearray(b"\xff" * data_size)
        return _ok(b"")

    def _nv_handles(self, body: bytes) -> tuple[int, bytes] | bytes:
        auth, index = struct.unpack_from(">II", body)
        rest = _skip_password(body[8:])
        if rest is None:
            return _error(RC_AUTH_FAIL)
        if auth != index or index not in self.nv:
            return _error(RC_HANDLE)
        return index, rest

    def _write(self, body: bytes) -> bytes:
        parsed = self._nv_handles(body)
        if isinstance(parsed, bytes):
            return parsed
        index, rest = parsed
        (size,) = struct.unpack_from(">H", rest)
        data = rest[2 : 2 + size]
        (offset,) = struct.unpack_from(">H", rest, 2 + size)
        if size > self.nv_buffer_max or offset + size > len(self.nv[index]):
            return _error(RC_NV_RANGE)
        self.nv[index][offset : offset + size] = data
        self.written.add(index)
        return _ok(b"")

    def _read(self, body: bytes) -> bytes:
        parsed = self._nv_handles(body)
        if isinstance(parsed, bytes):
            return parsed
        index, rest = parsed
        size, offset = struct.unpack(">HH", rest)
        if index not in self.written:
            return _error(RC_NV_UNINITIALIZED)
        if size > self.nv_buffer_max or offset + size > len(self.nv[index]):
            return _error(RC_NV_RANGE)
        data = bytes(self.nv[index][offset : offset + size])
        return _ok(struct.pack(">H", len(data)) + data)

    def _undefine(self, body: bytes) -> bytes:
        auth, index = struct.unpack_from(">II", body)
        if auth != RH_OWNER or _skip_password(body[8:]) != b"":
            return _error(RC_HANDLE)
        if index not in self.nv:
            return _error(RC_HANDLE)
        del self.nv[index]
        self.written.discard(index)
        return _ok(b"")

    def _nsm(self, body: bytes) -> bytes:
        parsed = self._nv_handles(body)
        if isinstance(parsed, bytes):
            return parsed
        index, rest = parsed
        if rest:
            return _error(0x095)  # TPM_RC_SIZE: the vendor command has no parameters
        request = cbor2.CBORDecoder(io.BytesIO(bytes(self.nv[index]))).decode()
        fields = request["Attestation"]
        assert set(fields) == {"user_data", "nonce", "public_key"}
        assert all(v is None or isinstance(v, bytes) for v in fields.values())
        self.requests.append(fields)
        if self.nsm_answer is not None:
            response = self.nsm_answer(fields)
        else:
            response = {"Attestation": {"document": self.source.get_attestation_document(**fields)}}
        encoded = cbor2.dumps(response)
        if len(encoded) > len(self.nv[index]):
            return _error(0x14B)
        self.nv[index][: len(encoded)] = encoded
        return _ok(b"")


def _skip_password(data: bytes) -> bytes | None:
    """Check one empty password session; the bytes after it, or ``None``."""
    if data[:13] != struct.pack(">IIHBH", 9, RS_PW, 0, 0, 0):
        return None
    return data[13:]


def _ok(parameters: bytes, *, sessions: bool = True) -> bytes:
    if not sessions:
        return struct.pack(">HII", NO_SESSIONS, 10 + len(parameters), 0) + parameters
    body = struct.pack(">I", len(parameters)) + parameters + b"\x00\x00\x01\x00\x00"
    return struct.pack(">HII", SESSIONS, 10 + len(body), 0) + body


def _error(code: int) -> bytes:
    return struct.pack(">HII", NO_SESSIONS, 10, code)


class PtyTpm:
    """Serves a :class:`StandInTpm` on a pseudo-terminal; ``path`` is the device to open."""

    def __init__(self, tpm: StandInTpm) -> None:
        self.tpm = tpm
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self.errors: list[Exception] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="standin-tpm", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self._master, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(1.0):
                    if key.fd == self._wake_r:
                        return
                    try:
                        buffer += os.read(self._master, 65536)
                    except OSError:
                        return
                while len(buffer) >= 10:
                    (size,) = struct.unpack_from(">I", buffer, 2)
                    if len(buffer) < size:
                        break
                    command, buffer = buffer[:size], buffer[size:]
                    try:
                        response = self.tpm.answer(command)
                    except Exception as exc:
                        self.errors.append(exc)
                        response = _error(0x101)  # TPM_RC_FAILURE
                    if response is not None:
                        os.write(self._master, response)

    def close(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(30)
        assert not self._thread.is_alive()
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            os.close(fd)
        assert not self.errors, f"the stand-in TPM failed: {self.errors!r}"


TOOL_SCRIPT = r'''#!{python}
"""A stand-in nitro-tpm-attest: same flags, document on stdout (tests only)."""
import json, os, sys, time
from pathlib import Path

plan = json.loads(Path({plan!r}).read_text())
args = sys.argv[1:]
fields = {{}}
while args:
    flag, path = args[0], args[1]
    assert flag in ("--user-data", "--nonce", "--public-key"), flag
    fields[flag] = Path(path).read_bytes()
    args = args[2:]
record = {{
    "argv": sys.argv[1:],
    "env": dict(os.environ),
    "fields": {{k: v.hex() for k, v in fields.items()}},
    "modes": {{
        k: oct(os.stat(p).st_mode & 0o777) for k, p in zip(sys.argv[1::2], sys.argv[2::2])
    }},
    "dir_mode": (
        oct(os.stat(os.path.dirname(sys.argv[2])).st_mode & 0o777) if len(sys.argv) > 2 else ""
    ),
}}
Path({plan!r}).with_suffix(".seen").write_text(json.dumps(record))
mode = plan["mode"]
if mode == "hang":
    time.sleep(3600)
if mode == "fail":
    sys.stderr.write("Error: TPM error response: TPM_RC_NV_SPACE\x1b[0m\n" * 3)
    sys.exit(1)
if mode == "garbage":
    sys.stdout.buffer.write(b"this is not CBOR at all\n")
    sys.exit(0)
if mode == "flood":
    sys.stdout.buffer.write(b"x" * 100000)
    sys.exit(0)
sys.stdout.buffer.write(Path(plan["document"]).read_bytes())
'''


def write_tool(directory: Path, mode: str, document: bytes = b"") -> Path:
    """An executable ``nitro-tpm-attest`` in ``directory`` that behaves as ``mode`` says.

    Modes: ``"ok"`` (writes ``document``), ``"hang"``, ``"fail"`` (exit 1 with stderr),
    ``"garbage"``, ``"flood"``. What it saw is in ``plan.seen`` (JSON) next to it.
    """
    import json

    directory.mkdir(parents=True, exist_ok=True)
    plan = directory / "plan.json"
    doc = directory / "document.cbor"
    doc.write_bytes(document)
    plan.write_text(json.dumps({"mode": mode, "document": str(doc)}))
    tool = directory / "nitro-tpm-attest"
    tool.write_text(TOOL_SCRIPT.format(python=sys.executable, plan=str(plan)))
    tool.chmod(0o755)
    return tool
