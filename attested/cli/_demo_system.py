"""The whole system on one machine: what ``attested demo`` runs.

Nothing here is needed by production code; it wires the real parts together the way a
deployment does, with loopback TCP standing in for vsock and the KMS emulator standing in
for AWS KMS:

* "AWS": the KMS emulator (in this process, over HTTPS with a throwaway CA), trusting
  the simulated NSM's root instead of the AWS Nitro root;
* the parent instance: ``attested parent`` (a child process) with the egress relay and
  its allowlist, credential delivery and the log sink;
* two simulated enclaves: each an ``attested serve`` child process with a simulated NSM
  and an ``attested relay enclave-egress`` child process; enclave A runs the measured
  image, enclave B a modified one (another PCR0).

Every process and file is made under one temporary directory, and everything is stopped
and removed on the way out, on success, failure or Ctrl-C.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from attested import emulator, pcr
from attested.keypolicy import (
    MeasurementSet,
    Severity,
    generate_policy,
    lint_policy,
    parse_measurements,
    parse_policy,
    render_policy,
)
from attested.net import Address, parse_address
from attested.policy import Policy
from attested.service._http import UnixHTTPConnection
from attested.simulator import ROOT_CERT_FILE, SimulatedNsm
from attested.trust import TrustRoot
from attested.verify import Verifier

REGION = "us-east-1"
ACCOUNT = "111122223333"
KMS_HOST = f"kms.{REGION}.amazonaws.com"
ADMIN = f"arn:aws:iam::{ACCOUNT}:role/KeyAdmin"
ENCLAVE_ROLE = f"arn:aws:iam::{ACCOUNT}:role/enclave-parent"
PRODUCER = f"arn:aws:iam::{ACCOUNT}:role/data-producer"

# The secret the data producer encrypts. The demo never prints it: it only says whether
# what came back inside the enclave is the same bytes.
SECRET = b"postgres://app:demo-password-do-not-use@db.internal:5432/payments"
CONTEXT = {"purpose": "attested-demo", "tenant": "example"}


class DemoFailure(Exception):
    """A step of the demo did not turn out as it must; the message says which."""


@dataclass(frozen=True)
class _Identity:
    arn: str
    access_key_id: str
    secret_access_key: str = field(repr=False)


def _identity(arn: str, prefix: str) -> _Identity:
    # Fresh random development credentials per run: the emulator knows only these.
    return _Identity(
        arn=arn,
        access_key_id="AKIA" + prefix + secrets.token_hex(8).upper()[: 16 - len(prefix)],
        secret_access_key=secrets.token_urlsafe(30),
    )


class Printer:
    """Prints numbered steps for a newcomer."""

    def __init__(self, out: Any = None) -> None:
        self._out = out or sys.stdout
        self._step = 0

    def title(self, text: str) -> None:
        print(text, file=self._out, flush=True)

    def step(self, text: str) -> None:
        self._step += 1
        print(f"\n[{self._step}] {text}", file=self._out, flush=True)

    def say(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            print(f"    {line}", file=self._out, flush=True)


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


class Processes:
    """Child processes started by the demo; all of them are stopped on exit."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._children: list[_Child] = []

    def start(
        self, name: str, args: list[str], *, env: Mapping[str, str], ready_file: Path
    ) -> Mapping[str, Address]:
        """Start ``python -m attested ARGS`` and wait for its ready file."""
        log = self._directory / f"{name}.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "attested", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=dict(env),
                cwd=self._directory,
                start_new_session=True,
            )
        child = _Child(name=name, process=process, log=log)
        self._children.append(child)
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            if ready_file.exists():
                ready = json.loads(ready_file.read_text())
                return {k: parse_address(v) for k, v in ready["listeners"].items()}
            if process.poll() is not None:
                raise DemoFailure(
                    f"{name} exited with status {process.returncode} before it was ready:\n"
                    + self.tail(child)
                )
            time.sleep(0.05)
        raise DemoFailure(f"{name} was not ready within 30 s:\n{self.tail(child)}")

    @staticmethod
    def tail(child: _Child, lines: int = 15) -> str:
        try:
            text = child.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, name: str, deadline: float = 10.0) -> int | None:
        """SIGTERM one child, wait for it (SIGKILL after ``deadline``), return its status."""
        for child in self._children:
            if child.name == name:
                return self._stop(child, deadline)
        return None

    def _stop(self, child: _Child, deadline: float) -> int:
        if child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
            try:
                child.process.wait(deadline)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()
        return child.process.returncode

    def stop_all(self) -> dict[str, int]:
        return {c.name: self._stop(c, 10.0) for c in reversed(self._children)}

    def logs(self) -> dict[str, str]:
        out = {}
        for child in self._children:
            with contextlib.suppress(OSError):
                out[child.name] = child.log.read_text(errors="replace")
        return out


def api_call(socket_path: str, route: str, body: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST JSON to the enclave's local API, as an app inside the enclave does."""
    connection = UnixHTTPConnection(socket_path)
    try:
        connection.request(
            "POST", route, body=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    return response.status, json.loads(data)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _measurements() -> MeasurementSet:
    data = resources.files("attested._store").joinpath("demo_measurements.json").read_bytes()
    (image,) = parse_measurements(data, source="examples/demo/measurements.json")
    return image


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _boto(endpoint: str, who: _Identity, ca: Path) -> Any:
    return boto3.client(
        "kms",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=who.access_key_id,
        aws_secret_access_key=who.secret_access_key,
        verify=str(ca),
        config=Config(retries={"total_max_attempts": 1}),
    )


def _child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    # Children get a clean environment: no AWS credentials or settings leak in from the
    # user's shell, so the demo never talks to a real AWS account.
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "SYSTEMROOT", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env.update(extra or {})
    return env


@dataclass
class _Enclave:
    name: str
    socket_path: str
    pcrs: dict[int, bytes]
    egress: Address


@dataclass
class _Demo:
    """What the steps share: where to print and work, who is who, and what is running."""

    p: Printer
    base: Path
    processes: Processes
    image: MeasurementSet = field(default_factory=_measurements)
    admin: _Identity = field(default_factory=lambda: _identity(ADMIN, "ADMIN"))
    parent_role: _Identity = field(default_factory=lambda: _identity(ENCLAVE_ROLE, "PARENT"))
    producer: _Identity = field(default_factory=lambda: _identity(PRODUCER, "PROD"))
    kms: emulator.KmsEmulator | None = None
    state: Path = Path()
    trust_root: TrustRoot | None = None
    ca: Path = Path()
    port: int = 0
    key_arn: str = ""
    blob: bytes = b""
    parent: Mapping[str, Address] = field(default_factory=dict)

    @property
    def direct(self) -> str:
        """The emulator's endpoint, as the AWS-side callers use it."""
        return f"https://127.0.0.1:{self.port}"


def run_demo(
    printer: Printer | None = None, *, workdir: Path | None = None, nitrotpm: bool = False
) -> None:
    """Run the whole demonstration; raise :class:`DemoFailure` if any step goes wrong.

    Args:
        printer: where the steps go (stdout by default).
        workdir: a directory to work in (a new temporary one, removed afterwards, by
            default; a given one is left in place, for tests that inspect it).
        nitrotpm: run the EC2 instance flow (:mod:`attested.cli._demo_instance`) instead
            of the enclave one.
    """
    p = printer or Printer()
    # The simulator and the emulator log warnings meant for operators ("this is not a
    # real NSM"); the demo explains that itself, so keep them out of its output.
    logging.getLogger("attested").addHandler(logging.NullHandler())
    own_dir = workdir is None
    base = Path(tempfile.mkdtemp(prefix="attested-demo-")) if workdir is None else workdir
    processes = Processes(base)
    demo: _Demo | None = None
    interrupted = False
    try:
        if nitrotpm:
            from attested.cli import _demo_instance

            role = _identity(_demo_instance.INSTANCE_ROLE, "INST")
            demo = _Demo(p, base, processes, parent_role=role)
            _demo_instance.run(demo)
        else:
            demo = _Demo(p, base, processes)
            _run(demo)
    except KeyboardInterrupt:
        interrupted = True
        _ignore_sigint()  # a second Ctrl-C must not leave processes behind
        print(
            "\nattested demo: interrupted; cleaning up: stopping its processes"
            + (f" and removing {base}" if own_dir else "")
            + " ...",
            file=sys.stderr,
            flush=True,
        )
        raise
    finally:
        statuses = processes.stop_all()
        if demo is not None and demo.kms is not None:  # also when a later step failed
            demo.kms.stop()
        if own_dir:
            shutil.rmtree(base, ignore_errors=True)
        if interrupted:
            print("attested demo: cleaned up", file=sys.stderr, flush=True)
    unclean = {name: status for name, status in statuses.items() if status != 0}
    if unclean:
        raise DemoFailure(f"processes did not stop cleanly: {unclean}")
    p.step("Cleaned up")
    p.say(
        "every process stopped on SIGTERM with status 0; "
        + ("the temporary directory is gone" if own_dir else f"files kept in {base}")
    )


def _short(value: bytes) -> str:
    """A PCR in hex, shortened to fit a line of 100 columns (the file has it whole)."""
    text = value.hex()
    return text if len(text) <= 64 else f"{text[:48]}...{text[-8:]}"


def _ignore_sigint() -> None:
    """Ignore further SIGINTs while cleaning up (from the main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(d: _Demo) -> None:
    d.p.title("attested demo: a Nitro Enclave secret flow on one machine")
    d.p.say(
        "No AWS account, no Nitro hardware: the KMS emulator plays AWS KMS, a simulated\n"
        "NSM plays the Nitro Secure Module, and loopback TCP stands in for vsock.\n"
        f"Working directory: {d.base}"
    )
    _start_aws(d)
    _make_key(d)
    _encrypt_secret(d)
    _parent_cannot_decrypt(d)
    _start_parent(d)
    enclave_a = _boot_enclave_a(d)
    _unmodified_app_in_a(d, enclave_a)
    enclave_b = _enclave_b_is_refused(d)
    _attested_tls(d, enclave_a, enclave_b)
    _stop_everything(d, (enclave_b, enclave_a))


def _start_aws(d: _Demo) -> None:
    d.p.step("Start the simulator's test PKI and the KMS emulator (playing AWS KMS)")
    d.state = d.base / "simulated-nsm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the simulator warns that it is not a real NSM
        SimulatedNsm(state_dir=d.state, pcrs=dict(d.image.pcrs))
    d.trust_root = TrustRoot.from_pem((d.state / ROOT_CERT_FILE).read_bytes(), name="simulated")
    tls = emulator.make_dev_tls(d.base, (KMS_HOST, "127.0.0.1"), lifetime=timedelta(hours=2))
    d.ca = tls.ca
    d.kms = emulator.KmsEmulator(
        emulator.EmulatorConfig(
            trust_root=d.trust_root,
            region=REGION,
            identities={
                who.access_key_id: emulator.Identity(
                    secret_access_key=who.secret_access_key, arn=who.arn
                )
                for who in (d.admin, d.parent_role, d.producer)
            },
            tls=(tls.certificate, tls.key),
        )
    )
    d.kms.start()
    d.port = int(d.kms.endpoint_url.rsplit(":", 1)[1])
    d.p.say(
        f"KMS emulator: {d.direct} (HTTPS; it trusts only the simulated root)\n"
        f"simulated root: {d.state / ROOT_CERT_FILE}"
    )


def _make_key(d: _Demo) -> None:
    d.p.step("Generate a key policy pinned to the enclave image's measurements")
    d.p.say(
        "measurements (as `nitro-cli build-enclave` prints them): examples/demo/measurements.json"
    )
    for index in sorted(d.image.pcrs):
        d.p.say(f"  PCR{index} = {_short(d.image.pcrs[index])}")
    policy = generate_policy(
        account=ACCOUNT,
        enclave_role=ENCLAVE_ROLE,
        admin_role=ADMIN,
        measurements=[d.image],
        encryptors=[PRODUCER],
        deny_without_attestation=True,
    )
    policy_path = _write_linted(d, policy)
    d.p.say(
        f"{policy_path.name}: {len(policy['Statement'])} statements, no linter errors\n"
        "  the enclave role may Decrypt only with an attestation document whose\n"
        "  PCR0/1/2 match; the data producer may only Encrypt; the admin cannot decrypt"
    )

    d.p.step("The key administrator creates the KMS key with that policy")
    _create_key(d, policy)
    d.p.say(f"key: {d.key_arn}")


def _write_linted(d: _Demo, policy: dict[str, Any]) -> Path:
    """Lint the generated policy (no error allowed) and write it to key-policy.json."""
    errors = [f for f in lint_policy(parse_policy(policy)) if f.severity is Severity.ERROR]
    if errors:
        raise DemoFailure(f"the generated policy fails the linter: {errors}")
    path = d.base / "key-policy.json"
    path.write_text(render_policy(policy) + "\n")
    return path


def _create_key(d: _Demo, policy: dict[str, Any]) -> None:
    """The key administrator creates the demo's KMS key with ``policy``."""
    admin_kms = _boto(d.direct, d.admin, d.ca)
    d.key_arn = admin_kms.create_key(Policy=render_policy(policy), Description="attested demo")[
        "KeyMetadata"
    ]["Arn"]
    admin_kms.close()


def _encrypt_secret(d: _Demo, for_whom: str = "the enclave") -> None:
    d.p.step(f"A data producer encrypts a secret for {for_whom} (outside {for_whom})")
    producer_kms = _boto(d.direct, d.producer, d.ca)
    d.blob = producer_kms.encrypt(KeyId=d.key_arn, Plaintext=SECRET, EncryptionContext=CONTEXT)[
        "CiphertextBlob"
    ]
    producer_kms.close()
    d.p.say(
        f"a {len(SECRET)}-byte database URL -> {len(d.blob)}-byte ciphertext, bound to the\n"
        f"encryption context {CONTEXT}"
    )


def _parent_cannot_decrypt(d: _Demo) -> None:
    d.p.step("The parent instance itself cannot decrypt it, even with the enclave's role")
    d.p.say(f"Decrypt without an attestation document: refused ({_parent_refused(d)})")


def _parent_refused(d: _Demo) -> str:
    """The error code KMS gives the parent's role for a Decrypt without attestation."""
    parent_kms = _boto(d.direct, d.parent_role, d.ca)
    try:
        parent_kms.decrypt(CiphertextBlob=d.blob, EncryptionContext=CONTEXT, KeyId=d.key_arn)
    except ClientError as exc:
        return str(exc.response.get("Error", {}).get("Code", "?"))
    else:
        raise DemoFailure("the parent decrypted without attestation: the policy is wrong")
    finally:
        parent_kms.close()


def _start_parent(d: _Demo) -> None:
    d.p.step("Start the parent companion: `attested parent` (egress, credentials, logs)")
    parent_toml = d.base / "parent.toml"
    parent_toml.write_text(
        "# attested parent, as the demo runs it: TCP on 127.0.0.1 stands in for vsock\n"
        "[egress]\n"
        'listen = "tcp:127.0.0.1:0"\n'
        f"allow = [{{address = {_toml_str(KMS_HOST)}, port = {d.port}}},"
        f' {{address = "127.0.0.1", port = {d.port}}}]\n'
        f'hosts = {{{_toml_str(KMS_HOST)} = "127.0.0.1"}}\n'
        "\n[credentials]\n"
        'listen = "tcp:127.0.0.1:0"\n'
        'source = "environment"\n'
        'allowed_peers = ["127.0.0.1"]\n'
        "\n[logs]\n"
        'listen = "tcp:127.0.0.1:0"\n'
        f"out = {_toml_str(str(d.base / 'enclave-logs.jsonl'))}\n"
    )
    d.parent = d.processes.start(
        "parent",
        ["parent", "--config", str(parent_toml), "--ready-file", str(d.base / "parent.ready")],
        env=_child_env(
            {
                "AWS_ACCESS_KEY_ID": d.parent_role.access_key_id,
                "AWS_SECRET_ACCESS_KEY": d.parent_role.secret_access_key,
                "AWS_DEFAULT_REGION": REGION,
            }
        ),
        ready_file=d.base / "parent.ready",
    )
    d.p.say(
        f"egress relay   {d.parent['egress']}  (allowlist: {KMS_HOST}:{d.port} only)\n"
        f"credentials    {d.parent['credentials']}  (the parent role's credentials, on request)\n"
        f"log sink       {d.parent['logs']}"
    )


def _boot_enclave_a(d: _Demo) -> _Enclave:
    d.p.step("Boot simulated enclave A (the measured image) running `attested serve`")
    enclave_a = _start_enclave(d, "enclave-a", dict(d.image.pcrs))
    d.p.say(
        f"local API      unix:{enclave_a.socket_path}\n"
        f"egress relay   {enclave_a.egress} (`attested relay enclave-egress`: the KMS proxy)\n"
        "credentials    from the parent, refreshed before they expire\n"
        f"PCR0 = {enclave_a.pcrs[0].hex()[:32]}... (matches the policy)"
    )

    d.p.step("A relying party checks enclave A before trusting it")
    nonce = secrets.token_bytes(32)
    status, reply = api_call(enclave_a.socket_path, "/v1/attestation", {"nonce": _b64(nonce)})
    if status != 200:
        raise DemoFailure(f"/v1/attestation answered {status}: {reply}")
    document = base64.b64decode(reply["document"])
    assert d.trust_root is not None  # noqa: S101 - set by _start_aws
    verified = Verifier(trust_root=d.trust_root).verify(
        document, policy=Policy(pcrs=dict(d.image.pcrs), nonce=nonce)
    )
    d.p.say(
        f"{len(document)}-byte attestation document with our nonce: signature, chain to\n"
        f"the simulated root, PCR0/1/2 and nonce verified\n(module {verified.module_id})"
    )

    d.p.step("An app inside enclave A asks the local API to decrypt the secret")
    status, reply = _decrypt_in(d, enclave_a.socket_path)
    if status != 200:
        raise DemoFailure(f"enclave A could not decrypt: {status} {reply}")
    if base64.b64decode(reply["plaintext"]) != SECRET:
        raise DemoFailure("enclave A got different bytes than the producer encrypted")
    d.p.say(
        "POST /v1/decrypt -> 200: the plaintext matches what the producer encrypted\n"
        "path: app -> local API -> KMS client (fresh attestation document, ephemeral\n"
        "RSA key) -> enclave egress -> parent egress (allowlist) -> KMS, which checked\n"
        "the document against the policy and encrypted the answer to the enclave's key;\n"
        "the parent relayed only ciphertext"
    )
    return enclave_a


# The unmodified app _unmodified_app_in_a runs under `attested exec`: a POSIX shell script
# (not Python) that reads its secret from the environment, then hands over to a Python
# program whose stock boto3 client names no endpoint. Both print digests only; the Python
# part refuses to run unless exec pointed it at a loopback endpoint (so it can never
# reach a real AWS host).
_APP_SH = """\
set -eu
digest=$(printf %s "$DATABASE_URL" | { sha256sum 2>/dev/null || shasum -a 256; } | cut -d' ' -f1)
echo "env DATABASE_URL sha256 $digest"
exec "$@"
"""
_APP_PY = """\
import base64, hashlib, json, os, sys
url = os.environ.get("AWS_ENDPOINT_URL_KMS", "")
if not url.startswith("http://127.0.0.1:"):
    sys.exit("no in-enclave KMS endpoint in AWS_ENDPOINT_URL_KMS")
import boto3
kms = boto3.client("kms", region_name=sys.argv[1])
blob, context = base64.b64decode(sys.argv[2]), json.loads(sys.argv[3])
got = kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)
print("boto3 kms.decrypt sha256", hashlib.sha256(got["Plaintext"]).hexdigest())
"""


def _unmodified_app_in_a(d: _Demo, enclave: _Enclave) -> None:
    d.p.step("An unmodified app in enclave A, started by `attested exec`")
    directory = d.base / f"{enclave.name}-exec"
    directory.mkdir(mode=0o700)
    config = directory / "enclave.toml"
    secret = {"ciphertext": _b64(d.blob), "key_id": d.key_arn, "env": "DATABASE_URL"}
    config.write_text(
        f"# attested exec inside simulated {enclave.name}\n"
        + _enclave_toml(d, enclave.pcrs, enclave.egress, str(directory / "api.sock"))
        + '\n[kms_endpoint]\nlisten = "tcp:127.0.0.1:0"\n'
        + '\n[exec]\napp_name = "legacy-app"\nloopback = false\n'
        + '\n[[secrets]]\nname = "database-url"\n'
        + "".join(f"{k} = {_toml_str(v)}\n" for k, v in secret.items())
        + f"encryption_context = {json.dumps(CONTEXT).replace(':', ' =')}\n"
    )
    python = [sys.executable, "-c", _APP_PY, REGION, _b64(d.blob), json.dumps(CONTEXT)]
    app = ["sh", "-c", _APP_SH, "app.sh", *python]
    # Any credentials will do for the app's SDK: the endpoint signs nothing with them.
    env = _child_env({"AWS_ACCESS_KEY_ID": "AKIAANYAPPKEY0000000", "AWS_SECRET_ACCESS_KEY": "x"})
    log = d.base / f"{enclave.name}-exec.log"
    args = ["exec", "--config", str(config), "--", *app]
    status, printed, said = _attested_cli(d, args, env=env, log=log)
    digest = hashlib.sha256(SECRET).hexdigest()
    wanted = (f"env DATABASE_URL sha256 {digest}", f"boto3 kms.decrypt sha256 {digest}")
    if status != 0 or any(line not in printed for line in wanted):
        raise DemoFailure(f"attested exec exited {status}; the app printed {printed!r}\n{said}")
    if not _wait_for_shipped(d.base / "enclave-logs.jsonl", "legacy-app", len(wanted)):
        raise DemoFailure("the app's output did not reach the parent's log sink")
    code = _parent_refused(d)
    d.p.say(
        "`attested exec --config enclave.toml -- sh app.sh`: exec attested, opened the\n"
        "secret with KMS and only then started the shell script, with it in DATABASE_URL;\n"
        "the script's Python part, a stock boto3 (no endpoint_url, no attestation code),\n"
        "decrypted the same ciphertext through the in-enclave KMS endpoint (exec set\n"
        "AWS_ENDPOINT_URL_KMS); both plaintexts match, and the app's output went to the\n"
        f"parent's log sink; the parent's role alone is still refused ({code})"
    )


def _wait_for_shipped(sink: Path, source: str, count: int, timeout: float = 10.0) -> bool:
    """Whether ``count`` lines of ``source`` reached the log sink's file in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):  # not there yet, or a line half-written
            records = [json.loads(line) for line in sink.read_text().splitlines() if line]
            if sum(1 for r in records if r.get("source") == source) >= count:
                return True
        time.sleep(0.05)
    return False


# The web app behind the attested TLS ingress: plain HTTP (the standard library's
# http.server) on a Unix socket, no TLS code. On SIGTERM it removes its socket and exits
# 0, so its exec does too.
_WEB_APP = """\
import functools, http.server, os, signal, socketserver, sys
def stop(*_): os.unlink(sys.argv[1]); sys.exit(0)
signal.signal(signal.SIGTERM, stop)
class Handler(http.server.SimpleHTTPRequestHandler):
    def address_string(self): return "local"
    def log_message(self, *args): pass
class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
Server(sys.argv[1], functools.partial(Handler, directory=sys.argv[2])).serve_forever()
"""


def _attested_tls(d: _Demo, enclave_a: _Enclave, enclave_b: _Enclave) -> None:
    d.p.step("A relying party connects to each enclave with attested TLS")
    urls = {e.name: _start_web_enclave(d, e) for e in (enclave_a, enclave_b)}
    pcr0 = d.image.pcrs[0].hex()
    root = str(d.state / ROOT_CERT_FILE)
    answers = {}
    for name, url in urls.items():
        command = ["connect", url, "--root", root, "--pcr", f"0={pcr0}", "--timeout", "10"]
        answers[name] = _attested_cli(d, command)
    status_a, page_a, _ = answers[enclave_a.name]
    if status_a != 0 or f"hello from {enclave_a.name}" not in page_a:
        raise DemoFailure(f"attested connect to enclave A exited {status_a}: {page_a!r}")
    status_b, _, said_b = answers[enclave_b.name]
    if status_b != 1 or "pcr0" not in said_b.lower():
        raise DemoFailure(f"attested connect to enclave B exited {status_b}: {said_b!r}")
    d.p.say(
        f"attested connect {urls[enclave_a.name]} --pcr 0=<the policy's PCR0>\n"
        f"  -> exit 0, page {page_a.strip()!r}: the certificate carried a document\n"
        "  binding its key, signed by the (simulated) NSM, with the expected PCR0\n"
        f"attested connect {urls[enclave_b.name]} (enclave B) -> exit 1, refused in the\n"
        "  handshake before any byte was sent: PCR0 is not the expected one\n"
        "the app behind each ingress is plain `http.server`: TLS ends in the enclave"
    )


def _start_web_enclave(d: _Demo, enclave: _Enclave) -> str:
    """`attested exec` with an attested TLS ingress in front of a web app; its URL."""
    directory = d.base / f"{enclave.name}-web"
    (directory / "site").mkdir(parents=True, mode=0o700)
    (directory / "site" / "index.html").write_text(f"hello from {enclave.name}\n")
    app_socket = directory / "app.sock"
    config = directory / "enclave.toml"
    config.write_text(
        f"# attested exec with an attested TLS ingress inside simulated {enclave.name}\n"
        + _enclave_toml(d, enclave.pcrs, enclave.egress, str(directory / "api.sock"))
        + '\n[exec]\napp_name = "web"\nloopback = false\n'
        + '\n[[ingress]]\nlisten = "tcp:127.0.0.1:0"\n'
        + f'to = {_toml_str("unix:" + str(app_socket))}\ntls = "attested"\n'
    )
    app = [sys.executable, "-c", _WEB_APP, str(app_socket), str(directory / "site")]
    ready = directory / "ready.json"
    listeners = d.processes.start(
        f"{enclave.name}-web",
        ["exec", "--config", str(config), "--ready-file", str(ready), "--", *app],
        env=_child_env(),
        ready_file=ready,
    )
    ingress = listeners["ingress-0"]
    _wait_for_app(app_socket)
    return f"https://{ingress.host}:{ingress.port}/"


def _wait_for_app(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise DemoFailure(f"the web app does not listen on {path}") from None
        time.sleep(0.05)


def _attested_cli(
    d: _Demo, args: list[str], *, env: Mapping[str, str] | None = None, log: Path | None = None
) -> tuple[int, str, str]:
    """Run ``attested ARGS`` to its end: (status, stdout, stderr).

    ``env`` replaces the clean child environment; with ``log``, stderr goes to that file
    (kept for the stop step's secret check) and is read back from it.
    """
    with contextlib.ExitStack() as stack:
        stderr = subprocess.PIPE if log is None else stack.enter_context(log.open("wb"))
        try:
            done = subprocess.run(
                [sys.executable, "-m", "attested", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=_child_env() if env is None else dict(env),
                cwd=d.base,
                timeout=60,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DemoFailure(f"attested {args[0]} did not finish within 60 s") from None
    said = done.stderr if log is None else log.read_bytes()
    return done.returncode, done.stdout.decode(errors="replace"), said.decode(errors="replace")


def _decrypt_in(d: _Demo, socket_path: str) -> tuple[int, dict[str, Any]]:
    """Ask the local API at ``socket_path`` to decrypt the producer's secret."""
    body = {"ciphertext_blob": _b64(d.blob), "key_id": d.key_arn, "encryption_context": CONTEXT}
    return api_call(socket_path, "/v1/decrypt", body)


def _enclave_b_is_refused(d: _Demo) -> _Enclave:
    d.p.step("Boot simulated enclave B: same app, but a modified image (another PCR0)")
    pcrs_b = dict(d.image.pcrs)
    pcrs_b[0] = pcr.measure(b"attested demo enclave image v1, with a backdoor")
    enclave_b = _start_enclave(d, "enclave-b", pcrs_b)
    d.p.say(f"PCR0 = {pcrs_b[0].hex()[:32]}... (not in the policy)")
    status, reply = _decrypt_in(d, enclave_b.socket_path)
    if status != 403:
        raise DemoFailure(f"enclave B was not refused: {status} {reply.get('error')}")
    message = str(reply.get("message", ""))
    presented = f"PCR0={pcrs_b[0].hex()}"
    if presented not in message:
        raise DemoFailure("the refusal does not name the PCR0 enclave B presented")
    d.p.say(
        f"POST /v1/decrypt -> 403 {reply.get('error')}: KMS refused, and the message says\n"
        "why, with every PCR the enclave presented, for example:\n"
        f"  presented PCR0 = {_short(pcrs_b[0])}\n"
        f"  policy's  PCR0 = {_short(d.image.pcrs[0])}\n"
        "(a rebuilt image changes PCR0-2: update the key policy only for images you trust)"
    )
    return enclave_b


def _stop_everything(d: _Demo, enclaves: tuple[_Enclave, ...]) -> None:
    d.p.step("Stop everything")
    for enclave in enclaves:
        status_code = d.processes.stop(enclave.name)
        if status_code != 0:
            raise DemoFailure(f"{enclave.name} exited with {status_code} on SIGTERM")
        if os.path.exists(enclave.socket_path):
            raise DemoFailure(f"{enclave.name} left its socket behind")
        for part in ("web", "egress"):
            status_code = d.processes.stop(f"{enclave.name}-{part}")
            if status_code not in (0, None):
                raise DemoFailure(f"{enclave.name}-{part} exited with {status_code} on SIGTERM")
    d.processes.stop("parent")
    logs = dict(d.processes.logs())
    for path in d.base.glob("*-exec.log"):
        logs[path.stem] = path.read_text(errors="replace")
    shipped = d.base / "enclave-logs.jsonl"
    lines = shipped.read_text(errors="replace") if shipped.exists() else ""
    logs["parent's log sink"] = lines
    _check_logs(logs, [SECRET, d.parent_role.secret_access_key])
    d.p.say(
        f"the parent's log sink received {len(lines.splitlines())} JSON log lines from the\n"
        "two enclaves; no secret or credential appears in them or in any process's log"
    )
    if not lines:
        raise DemoFailure("no log line from the enclaves reached the parent's log sink")


def _start_enclave(d: _Demo, name: str, pcrs: Mapping[int, bytes]) -> _Enclave:
    directory = d.base / name
    directory.mkdir(mode=0o700)
    # The enclave's egress relay: a CONNECT proxy on the enclave's loopback that carries
    # each tunnel to the parent (over vsock in a real enclave; TCP here).
    egress = d.processes.start(
        f"{name}-egress",
        [
            "relay",
            "enclave-egress",
            "--listen",
            "tcp:127.0.0.1:0",
            "--parent",
            str(d.parent["egress"]),
            "--ready-file",
            str(directory / "egress.ready"),
        ],
        env=_child_env(),
        ready_file=directory / "egress.ready",
    )
    proxy = egress["enclave-egress"]
    socket_path = str(directory / "api.sock")
    config = directory / "serve.toml"
    config.write_text(
        f"# attested serve inside simulated {name}\n" + _enclave_toml(d, pcrs, proxy, socket_path)
    )
    ready = directory / "ready.json"
    d.processes.start(
        name,
        ["serve", "--config", str(config), "--ready-file", str(ready)],
        env=_child_env(),
        ready_file=ready,
    )
    return _Enclave(name=name, socket_path=socket_path, pcrs=dict(pcrs), egress=proxy)


def _enclave_toml(d: _Demo, pcrs: Mapping[int, bytes], proxy: Address, socket_path: str) -> str:
    """What ``attested serve`` (and ``attested exec``) read inside a simulated enclave."""
    pcr_table = ", ".join(f'"{i}" = "{v.hex()}"' for i, v in sorted(pcrs.items()))
    return (
        f'region = "{REGION}"\n'
        "\n[api]\n"
        f"unix = {_toml_str(socket_path)}\n"
        "\n[nsm]\n"
        'backend = "simulated"\n'
        f"simulated_state = {_toml_str(str(d.state))}\n"
        f"simulated_pcrs = {{{pcr_table}}}\n"
        "\n[kms]\n"
        f'endpoint_url = "https://{KMS_HOST}:{d.port}"\n'
        f'proxy = "http://{proxy.host}:{proxy.port}"\n'
        f"ca_bundle = {_toml_str(str(d.ca))}\n"
        f"allowed_keys = [{_toml_str(d.key_arn)}]\n"
        "\n[credentials]\n"
        'source = "parent"\n'
        f'parent = "{d.parent["credentials"]}"\n'
        "\n[logs]\n"
        f'ship_to = "{d.parent["logs"]}"\n'
    )


def _check_logs(logs: Mapping[str, str], secrets_: list[bytes | str]) -> None:
    for name, text in logs.items():
        for value in secrets_:
            needle = value.decode() if isinstance(value, bytes) else value
            if needle in text or _b64(needle.encode()) in text:
                raise DemoFailure(f"{name}'s log contains a secret")
