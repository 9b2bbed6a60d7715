"""``attested exec`` from start to end: the five steps, in order, and the way back.

1. ``lo`` up, the ``[[hosts]]`` names in the hosts file;
2. the parts in this process: the local API, its egress relay, the hosts tunnels and the
   ingress forwards (:class:`~attested.exec._parts.EnclaveParts`);
3. every secret opened with attestation, in parallel;
4. the app started with its secrets in its environment and files, its output pumped;
5. signals forwarded and children reaped until the app exits; then the parts stop, the
   secret files are removed, and the app's exit is returned.

Nothing here picks an exit status or prints: failures are typed errors, the app's end an
:class:`~attested.exec._supervise.AppExit`; the CLI turns both into a status.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from attested.errors import AttestedError
from attested.exec._config import ExecConfig
from attested.exec._errors import SecretFailure, SecretsNotOpened
from attested.exec._handover import Handover, hand_over
from attested.exec._net import bring_up_loopback, write_hosts
from attested.exec._open import Plaintexts, open_secrets
from attested.exec._output import OutputPump
from attested.exec._parts import EnclaveParts
from attested.exec._stores import Stores
from attested.exec._supervise import AppExit, Supervisor, make_undumpable
from attested.kms import KmsClient, NetworkSettings
from attested.kms.credentials import CredentialsProvider
from attested.net import Address
from attested.provider import AttestationProvider
from attested.relay import VsockLogHandler
from attested.service import open_attestation, open_credentials

__all__ = ["StoppedBeforeStart", "run"]

log = logging.getLogger("attested.exec")

_PUMP_GRACE = 2.0  # seconds to wait for the app's output after it exited


class StoppedBeforeStart(AttestedError):
    """A stop signal arrived before the app started; everything started was stopped.

    Attributes:
        signal: the signal's number.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum} before the app started")
        self.signal = signum


def run(
    config: ExecConfig,
    argv: Sequence[str],
    *,
    console: tuple[BinaryIO, BinaryIO],
    env: Mapping[bytes, bytes] | None = None,
    on_ready: Callable[[Mapping[str, Address]], None] | None = None,
    attestation: AttestationProvider | None = None,
    credentials: CredentialsProvider | None = None,
) -> AppExit:
    """Run the app under ``config``: the five steps, then the way back.

    Call it from the main thread, before starting threads of your own: it blocks the
    signals it handles for every thread started after it begins (see ``_supervise``).
    With ``logs.ship_to``, exec's own records (the ``attested`` logger) and the app's
    lines are shipped there.

    Args:
        config: the checked configuration.
        argv: the app's command and arguments.
        console: this process's standard output and error (binary), for the app's lines.
        env: the environment the app inherits (``os.environb``); secrets are added.
        on_ready: called with every listener once the app has started.
        attestation: the NSM to use instead of ``nsm.backend`` (tests, embedding).
        credentials: the AWS credentials instead of ``[credentials]``.

    Returns:
        How the app ended.

    Raises:
        SetupError: a step failed because of the environment (``AppNotStarted``: the
            command cannot be executed).
        SecretsNotOpened: a required secret could not be opened or handed over.
        StoppedBeforeStart: a stop signal came first.
        AttestedError: the NSM, the credentials or a listener (the parts' own errors).
    """
    if not argv:
        raise ValueError("no command to run")
    settings = config.settings
    with contextlib.ExitStack() as stack:
        # First: the signal mask must be in place before any thread starts.
        supervisor = stack.enter_context(Supervisor(subreaper=settings.subreaper))
        if config.service.logs_ship_to:  # exec's own records, as serve ships its own
            own = VsockLogHandler(config.service.logs_ship_to, source="attested-exec")
            logging.getLogger("attested").addHandler(own)
            stack.callback(_close_shipper, own)
            stack.callback(logging.getLogger("attested").removeHandler, own)
        make_undumpable()
        if settings.loopback:
            bring_up_loopback()
        if config.hosts:
            write_hosts(Path(settings.hosts_file), config.hosts)
        _check(supervisor)
        if attestation is None:
            provider = open_attestation(config.service)
            stack.callback(provider.close)
            attestation = provider
        credentials = credentials or open_credentials(config.service)
        parts = EnclaveParts(config, attestation=attestation, credentials=credentials)
        parts.start()
        stack.callback(parts.stop, settings.stop_timeout)
        _check(supervisor)
        handover = _open_and_hand_over(config, supervisor, parts, attestation, credentials, env)
        stack.callback(handover.remove_files)
        shipper = _shipper(config, argv)
        if shipper is not None:
            stack.callback(_close_shipper, shipper)
        pumps = _start_app(supervisor, argv, handover, shipper, console)
        stack.callback(supervisor.stop_app, settings.stop_timeout)  # if we leave early
        if on_ready is not None:
            on_ready(parts.listeners)
        ended = supervisor.supervise(
            parts_running=lambda: parts.running, stop_timeout=settings.stop_timeout
        )
        for pump in pumps:
            if not pump.join(_PUMP_GRACE):
                log.info("another process still holds the app's output open")
            pump.close()
        if supervisor.orphans_reaped:
            log.info("reaped %d orphaned process(es)", supervisor.orphans_reaped)
        return ended
    raise AssertionError("unreachable")  # pragma: no cover - the with block returns


def _check(supervisor: Supervisor) -> None:
    if supervisor.stop_requested():
        assert supervisor.stop_signal is not None  # noqa: S101
        raise StoppedBeforeStart(supervisor.stop_signal)


def _open_and_hand_over(
    config: ExecConfig,
    supervisor: Supervisor,
    parts: EnclaveParts,
    attestation: AttestationProvider,
    credentials: CredentialsProvider,
    env: Mapping[bytes, bytes] | None,
) -> Handover:
    """Steps 3 and the first half of 4: open the secrets, write files, build the env."""
    service, settings = config.service, config.settings
    proxy = parts.egress_proxy()
    network = NetworkSettings(
        endpoint_url=service.kms_endpoint_url or None,
        proxy=proxy,
        ca_bundle=service.kms_ca_bundle or None,
        max_pool_connections=max(1, min(settings.parallel, len(config.secrets))),
    )
    stores = Stores(
        region=service.region, credentials=credentials, network=network, settings=settings
    )
    plaintexts, failures = Plaintexts(), list[SecretFailure]()
    if config.secrets:
        kms = KmsClient(
            region=service.region, attestation=attestation, credentials=credentials, network=network
        )
        with kms, contextlib.closing(stores):
            plaintexts, failures = open_secrets(
                config.secrets,
                kms=kms,
                stores=stores,
                parallel=settings.parallel,
                stop=supervisor.stop_requested,
            )
    try:
        _check(supervisor)
        _refuse(failures)
        extra = _app_env(parts, proxy if settings.proxy_env else None)
        handover, more = hand_over(
            config.secrets,
            plaintexts,
            base_env=os.environb if env is None else env,
            extra_env=extra,
            tmpfs=settings.tmpfs,
        )
    finally:
        plaintexts.clear()
    try:
        _refuse(more)
    except SecretsNotOpened:
        handover.clear()
        handover.remove_files()
        raise
    return handover


def _app_env(parts: EnclaveParts, proxy: str | None) -> dict[str, str]:
    """Variables the app gets unless it has them: the egress proxy, the KMS endpoint.

    A stock AWS SDK honours ``AWS_ENDPOINT_URL_KMS`` (ADR 0090); a Unix-socket endpoint
    cannot be named that way, so the app is then pointed at it by its own configuration.
    """
    extra: dict[str, str] = {}
    if proxy:
        extra |= {
            "HTTPS_PROXY": proxy,
            "https_proxy": proxy,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    endpoint = parts.listeners.get("kms_endpoint")
    if endpoint is not None and endpoint.kind == "tcp":
        host = f"[{endpoint.host}]" if ":" in (endpoint.host or "") else endpoint.host
        extra["AWS_ENDPOINT_URL_KMS"] = f"http://{host}:{endpoint.port}"
    return extra


def _refuse(failures: list[SecretFailure]) -> None:
    if any(not failure.optional for failure in failures):
        raise SecretsNotOpened(failures)
    for failure in failures:
        log.warning("optional %s; the app starts without it", failure)


def _shipper(config: ExecConfig, argv: Sequence[str]) -> VsockLogHandler | None:
    if not config.service.logs_ship_to:
        return None
    name = config.settings.app_name or os.path.basename(argv[0]) or "app"
    return VsockLogHandler(config.service.logs_ship_to, source=name)


def _close_shipper(shipper: VsockLogHandler) -> None:
    shipper.drain(5.0)
    shipper.close()


def _start_app(
    supervisor: Supervisor,
    argv: Sequence[str],
    handover: Handover,
    shipper: VsockLogHandler | None,
    console: tuple[BinaryIO, BinaryIO],
) -> list[OutputPump]:
    """Step 4, second half: spawn the app, drop its environment block, pump its output."""
    pipes: list[tuple[int, int]] = []
    try:
        if shipper is not None:
            pipes = [os.pipe(), os.pipe()]
        pid = supervisor.start(
            argv,
            handover.env,
            stdout=pipes[0][1] if pipes else None,
            stderr=pipes[1][1] if pipes else None,
        )
    except BaseException:
        for read, write in pipes:
            os.close(read)
            os.close(write)
        raise
    finally:
        handover.clear()
        gc.collect()
    del pid
    pumps: list[OutputPump] = []
    for (read, write), stream, out in zip(pipes, ("stdout", "stderr"), console, strict=False):
        os.close(write)
        assert shipper is not None  # noqa: S101 - pipes only with a shipper
        pumps.append(OutputPump(read, stream=stream, console=out, shipper=shipper))
    return pumps
