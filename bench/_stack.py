"""What the service benchmarks share: the emulator and ``attested serve`` as processes.

``service_bench.py`` and ``kms_endpoint_bench.py`` run the same stack: the KMS emulator
(``attested emulator kms``) trusting a simulated NSM root, a key whose policy pins PCR0,
and ``attested serve`` on the same root with environment credentials. :func:`stack`
starts it and stops every process on the way out.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from attested.emulator import DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY  # noqa: E402
from attested.kms import KmsClient, NetworkSettings, RecipientKey  # noqa: E402
from attested.kms.credentials import StaticCredentials  # noqa: E402
from attested.simulator import SimulatedNsm  # noqa: E402
from tests.kit import PCR0, kms_client  # noqa: E402
from tests.kms_endpoint.stack import key_policy  # noqa: E402

PLAINTEXT = b"a 32-byte database password here"


@dataclass
class Stack:
    """The running stack: where things are and what the benchmarks call."""

    work: Path
    state: Path
    emulator_url: str
    key: str
    blob: bytes
    listeners: dict[str, str]
    nsm: SimulatedNsm

    def port(self, listener: str) -> int:
        """The TCP port of one of the service's listeners (``kms_endpoint``, ...)."""
        return int(self.listeners[listener].rsplit(":", 1)[1])

    def direct_client(self) -> KmsClient:
        """A :class:`KmsClient` in this process: the same library, root and emulator."""
        return KmsClient(
            region="us-east-1",
            attestation=self.nsm,
            credentials=StaticCredentials(
                access_key_id=DEV_ACCESS_KEY_ID, secret_access_key=DEV_SECRET_ACCESS_KEY
            ),
            recipient_key=RecipientKey.process_default(),
            network=NetworkSettings(endpoint_url=self.emulator_url),
        )


def _wait(path: Path, process: subprocess.Popen[bytes], what: str) -> dict[str, str]:
    deadline = time.monotonic() + 60
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"{what} did not start")
        time.sleep(0.02)
    time.sleep(0.05)  # the ready file is written atomically; this only spares a retry
    return {k: str(v) for k, v in json.loads(path.read_text())["listeners"].items()}


def _start(args: list[str], ready: Path, what: str, **popen: Any) -> tuple[Any, dict[str, str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "attested", *args, "--ready-file", str(ready),
         "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        **popen,
    )  # fmt: skip
    return process, _wait(ready, process, what)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def stack(service_toml: str = "") -> Iterator[Stack]:
    """Start the emulator, make the key and a ciphertext, start ``attested serve``.

    Args:
        service_toml: more TOML for the service's configuration (``[kms_endpoint]``).
    """
    with tempfile.TemporaryDirectory(prefix="att-bench-", dir="/tmp") as tmp:
        work = Path(tmp)
        state = work / "sim"
        nsm = SimulatedNsm(state_dir=state, pcrs={0: PCR0})
        processes: list[subprocess.Popen[bytes]] = []
        try:
            process, listeners = _start(
                ["emulator", "kms", "--simulated-state", str(state)],
                work / "emulator.json",
                "the emulator",
            )
            processes.append(process)
            url = f"http://127.0.0.1:{listeners['kms'].rsplit(':', 1)[1]}"
            admin = kms_client(url, DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY)
            key = admin.create_key(Policy=key_policy(PCR0))["KeyMetadata"]["Arn"]
            blob = admin.encrypt(KeyId=key, Plaintext=PLAINTEXT)["CiphertextBlob"]
            config = work / "service.toml"
            config.write_text(
                f'[api]\nunix = "{work / "api.sock"}"\n'
                f'[nsm]\nbackend = "simulated"\nsimulated_state = "{state}"\n'
                f'simulated_pcrs = {{"0" = "{PCR0.hex()}"}}\n'
                f'[kms]\nendpoint_url = "{url}"\nallowed_keys = ["{key}"]\n'
                f'[credentials]\nsource = "environment"\n{service_toml}'
            )
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "AWS_ACCESS_KEY_ID": DEV_ACCESS_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": DEV_SECRET_ACCESS_KEY,
            }
            process, served = _start(
                ["serve", "--config", str(config)], work / "ready.json", "the service", env=env
            )
            processes.append(process)
            yield Stack(work, state, url, key, blob, served, nsm)
        finally:
            for process in reversed(processes):
                _stop(process)
            nsm.close()


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(name: str, seconds: list[float], width: int = 38) -> None:
    """One line: calls per second, p50 and p99."""
    print(
        f"{name:<{width}} {len(seconds) / sum(seconds):8.1f} decrypts/s"
        f"   p50 {pct(seconds, 0.5) * 1e3:7.2f} ms"
        f"   p99 {pct(seconds, 0.99) * 1e3:7.2f} ms"
    )
