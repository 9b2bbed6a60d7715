"""Health says what is degraded (credentials, NSM, KMS as last seen); live vs ready.

And the socket's directory: only its last component is created, and the log says so.
"""

from __future__ import annotations

import base64
import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from attested.cli import main
from attested.errors import CredentialsUnavailable
from attested.service import Service
from attested.service._health import CredentialsProbe, Health
from tests.service.conftest import Emu, StartService, service_config
from tests.service.helpers import ApiClient

DEADLINE = 30.0


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.stop(deadline=5.0)


def test_an_unreachable_credential_server_makes_health_degraded_and_not_ready(
    emu: Emu, sim_state: Path, short_dir: Path, services: list[Service]
) -> None:
    config = service_config(
        emu,
        sim_state,
        short_dir,
        credentials_source="parent",
        credentials_parent=f"tcp:127.0.0.1:{closed_port()}",
    )
    service = Service(config)  # no credentials given: they come from the "parent"
    service.start()
    services.append(service)
    with ApiClient(str(service.listeners["unix"].path)) as api:

        def failing() -> Any:
            body = api.get("/v1/health").json()
            return body if body["checks"]["credentials"]["status"] == "failing" else None

        health = wait_for(failing, "the credentials to be seen failing")
        assert health["status"] == "degraded"
        assert health["ready"] is False
        assert health["live"] is True
        assert (
            "could not reach the parent credential server"
            in (health["checks"]["credentials"]["detail"])
        )
        assert health["checks"]["nsm"]["status"] == "ok"
        assert health["checks"]["kms"]["status"] == "unknown"
        ready = api.get("/v1/health/ready")
        assert ready.status == 503
        assert ready.json()["checks"]["credentials"]["status"] == "failing"
        live = api.get("/v1/health/live")
        assert (live.status, live.json()) == (200, {"status": "live", "live": True})
        assert api.get("/v1/health").status == 200  # existing clients and probes: unchanged


def test_a_healthy_service_is_ok_and_ready_and_kms_is_seen_by_calls(
    emu: Emu, start_service: StartService
) -> None:
    service = start_service()
    with ApiClient(str(service.listeners["unix"].path)) as api:

        def credentials_ok() -> Any:
            body = api.get("/v1/health/ready").json()
            return body if body["checks"]["credentials"]["status"] == "ok" else None

        health = wait_for(credentials_ok, "the credentials to be seen")
        assert health["status"] == "ok"
        assert health["ready"] is True
        assert health["checks"]["kms"]["status"] == "unknown"  # no call yet
        blob = emu.boto().encrypt(KeyId=emu.keys.good, Plaintext=b"x")["CiphertextBlob"]
        body = {"ciphertext_blob": base64.b64encode(blob).decode(), "key_id": emu.keys.good}
        assert api.post("/v1/decrypt", body).status == 200
        checks = api.get("/v1/health").json()["checks"]
        assert checks["kms"]["status"] == "ok"
        assert checks["kms"]["seen_ago"] is not None


def test_kms_unreachable_is_degraded_but_ready(
    emu: Emu, start_service: StartService, caplog: pytest.LogCaptureFixture
) -> None:
    service = start_service(kms_endpoint_url=f"http://127.0.0.1:{closed_port()}")
    with ApiClient(str(service.listeners["unix"].path)) as api:
        with caplog.at_level(logging.INFO, logger="attested.service"):
            answer = api.post("/v1/generate-data-key", {"key_id": emu.keys.good})
        assert answer.status == 503
        ready = api.get("/v1/health/ready")
        assert ready.status == 200  # not a reason to take the service out of rotation
        assert ready.json()["status"] == "degraded"
        kms = ready.json()["checks"]["kms"]
        assert kms["status"] == "failing"
        assert kms["detail"]
    assert any("health: kms failing" in r.getMessage() for r in caplog.records)


def test_failing_credentials_are_looked_at_again_and_recover() -> None:
    health = Health()
    attempts: list[float] = []

    def fetch() -> object:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise CredentialsUnavailable("could not reach the parent credential server")
        return object()

    probe = CredentialsProbe(health, fetch, recheck_after=0.0)
    probe.start()
    try:
        wait_for(lambda: health.checks()["credentials"].status == "failing", "a failure")
        assert health.report(credentials_expire_in=None)["ready"] is False
        probe.maybe_recheck()  # what a health request does
        wait_for(lambda: health.checks()["credentials"].status == "ok", "recovery")
        assert health.report(credentials_expire_in=None)["ready"] is True
        count = len(attempts)
        probe.maybe_recheck()  # fine now: no more looks
        time.sleep(0.2)
        assert len(attempts) == count
    finally:
        probe.stop()


def test_expired_credentials_are_failing_whatever_was_seen() -> None:
    health = Health()
    health.saw("credentials", True)
    health.saw("nsm", True)
    report = health.report(credentials_expire_in=-90.0)
    assert report["ready"] is False
    checks: Any = report["checks"]
    assert checks["credentials"]["status"] == "failing"
    assert "expired 90 s ago" in checks["credentials"]["detail"]


def test_only_the_sockets_own_directory_is_created(
    emu: Emu,
    start_service: StartService,
    short_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="attested.service"):
        service = start_service(api_unix=str(short_dir / "run" / "api.sock"))
    assert service.listeners["unix"].path == str(short_dir / "run" / "api.sock")
    assert any(
        f"created the directory {short_dir / 'run'} for the socket" in r.getMessage()
        for r in caplog.records
    )


def test_a_missing_parent_directory_is_an_error_naming_it(
    emu: Emu, sim_state: Path, short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deep = short_dir / "nonexistent" / "dir" / "api.sock"
    config = short_dir / "serve.toml"
    config.write_text(
        f'region = "us-east-1"\n[api]\nunix = "{deep}"\n[nsm]\nbackend = "simulated"\n'
        f'simulated_state = "{sim_state}"\n[kms]\nallowed_keys = ["*"]\n'
        f'endpoint_url = "{emu.endpoint_url}"\n'
        f'[credentials]\nsource = "parent"\nparent = "tcp:127.0.0.1:{closed_port()}"\n'
    )
    status = main(["serve", "--config", str(config)])
    err = capsys.readouterr().err
    assert status == 3, err
    assert err.count("\n") == 1, err
    assert f"the directory {short_dir / 'nonexistent'} does not exist" in err
    assert not (short_dir / "nonexistent").exists()
