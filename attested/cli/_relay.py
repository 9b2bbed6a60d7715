"""``attested relay ...``: run relays until SIGTERM (or SIGINT); SIGHUP reopens log files."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from attested.cli._common import env_error, epilog, invalid_input, usage_error
from attested.cli._daemon import add_daemon_arguments, diagnostics_on_stderr, run_part
from attested.errors import ConfigurationError
from attested.net import Address, parse_address
from attested.relay import (
    Allowlist,
    EnclaveEgress,
    Forward,
    LogSink,
    ParentEgress,
    Relay,
    RelayOptions,
    Role,
    SystemResolver,
    load_allowlist,
)
from attested.relay._load import warn_if_exposed
from attested.relay._roles import MAX_KEEPALIVE


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``relay`` and its roles."""
    relay = subparsers.add_parser(
        "relay",
        help="run vsock relays: egress, ingress, log shipping",
        description="Relays between an enclave's vsock and the world. Each runs until "
        "SIGTERM or SIGINT, then stops accepting and lets open connections finish "
        "within --shutdown-timeout. Addresses: vsock:CID:PORT, tcp:HOST:PORT, unix:PATH.",
        epilog=epilog(
            ["attested relay enclave-egress --listen tcp:127.0.0.1:3128 --parent vsock:3:8000"],
            topic="relay",
        ),
    )
    roles = relay.add_subparsers(dest="role", metavar="ROLE", required=True)

    egress = roles.add_parser(
        "enclave-egress",
        help="inside the enclave: HTTP CONNECT proxy to the parent (set HTTPS_PROXY)",
        description="An HTTP CONNECT proxy for boto3, requests, curl (HTTPS_PROXY=http://"
        "LISTEN). Each tunnel is a new connection to the parent's parent-egress; TLS "
        "stays end to end. --forward adds raw forwards with no header, for apps that "
        "cannot use a proxy (the other end is a parent-egress --forward, vsock-proxy or "
        "socat).",
        epilog=epilog(
            ["attested relay enclave-egress --listen tcp:127.0.0.1:3128 --parent vsock:3:8000"],
            ok="stopped by SIGTERM or SIGINT",
            usage="an address or option is not valid",
            env="a listener cannot start, or the relay stopped unexpectedly",
            topic="relay",
        ),
    )
    egress.add_argument(
        "--listen",
        type=_address,
        metavar="ADDR",
        help="where the proxy listens, e.g. tcp:127.0.0.1:3128",
    )
    egress.add_argument(
        "--parent",
        type=_address,
        metavar="ADDR",
        help="the parent's parent-egress relay, e.g. vsock:3:8000",
    )
    _add_forward(egress, "tcp:127.0.0.2:443=vsock:3:8001")
    _add_common(egress)
    egress.set_defaults(handler=_run_enclave_egress)

    parent = roles.add_parser(
        "parent-egress",
        help="on the parent: accept the enclave's tunnels, dial allowlisted destinations",
        description="Accepts tunnels from enclave-egress and dials each destination the "
        "allowlist permits (vsock-proxy's YAML: allowlist: [{address: HOST, port: N}]). "
        "Names are resolved per connection and every address is tried; answers in "
        "loopback, link-local (instance metadata) and other internal ranges are refused "
        "unless that address is itself listed. --forward is vsock-proxy's fixed "
        "destination mode, with the same DNS rules.",
        epilog=epilog(
            [
                "attested relay parent-egress --listen vsock:ANY:8000 "
                "--allowlist /etc/nitro_enclaves/vsock-proxy.yaml"
            ],
            ok="stopped by SIGTERM or SIGINT",
            usage="an address or option is not valid, or the allowlist is malformed",
            env="a listener cannot start or the allowlist cannot be read, or the relay "
            "stopped unexpectedly",
            topic="relay",
        ),
    )
    parent.add_argument(
        "--listen",
        type=_address,
        metavar="ADDR",
        help="where the enclave's tunnels arrive, e.g. vsock:ANY:8000",
    )
    parent.add_argument(
        "--allowlist",
        type=Path,
        metavar="FILE",
        help="vsock-proxy allowlist, e.g. /etc/nitro_enclaves/vsock-proxy.yaml "
        "(required with --listen; with --forward, each destination must be in it)",
    )
    _add_forward(parent, "vsock:ANY:8000=tcp:kms.us-east-1.amazonaws.com:443")
    family = parent.add_mutually_exclusive_group()
    family.add_argument(
        "-4",
        "--ipv4",
        action="store_const",
        const=4,
        dest="ip_version",
        help="dial destinations over IPv4 only",
    )
    family.add_argument(
        "-6",
        "--ipv6",
        action="store_const",
        const=6,
        dest="ip_version",
        help="dial destinations over IPv6 only",
    )
    parent.add_argument(
        "--dns-cache",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep DNS answers this long, at most 60 (default 0: resolve per connection "
        "through the system resolver, which honours TTLs)",
    )
    _add_common(parent)
    parent.set_defaults(handler=_run_parent_egress)

    ingress = roles.add_parser(
        "ingress",
        help="raw forward, e.g. parent tcp:0.0.0.0:8443 -> vsock:16:8443, or enclave "
        "vsock:ANY:8443 -> tcp:127.0.0.1:8443",
        description="Forwards raw bytes from --listen to --to (both sides of ingress).",
        epilog=epilog(
            ["attested relay ingress --listen tcp:0.0.0.0:8443 --to vsock:16:8443"],
            ok="stopped by SIGTERM or SIGINT",
            usage="an address or option is not valid",
            env="a listener cannot start, or the relay stopped unexpectedly",
            topic="relay",
        ),
    )
    ingress.add_argument(
        "--listen", type=_address, metavar="ADDR", required=True, help="where to accept"
    )
    ingress.add_argument(
        "--to", type=_address, metavar="ADDR", required=True, help="where to forward to"
    )
    _add_common(ingress)
    ingress.set_defaults(handler=_run_ingress)

    logs = roles.add_parser(
        "logs",
        help="on the parent: write the enclave's JSON log lines to a file or stdout",
        description="Receives JSON lines from attested.relay.VsockLogHandler and appends "
        "them, one sanitised object per line, to --out (FluentBit or the CloudWatch "
        "agent can tail it). SIGHUP reopens the file after rotation.",
        epilog=epilog(
            ["attested relay logs --listen vsock:ANY:8090 --out /var/log/attested/enclave.jsonl"],
            ok="stopped by SIGTERM or SIGINT",
            usage="an address or option is not valid",
            env="a listener cannot start or --out cannot be opened, or the relay stopped "
            "unexpectedly",
            topic="relay",
        ),
    )
    logs.add_argument(
        "--listen",
        type=_address,
        metavar="ADDR",
        required=True,
        help="where the enclave's log lines arrive, e.g. vsock:ANY:8090",
    )
    logs.add_argument("--out", metavar="FILE", required=True, help="a file, or - for stdout")
    logs.add_argument(
        "--max-line", type=int, default=65536, metavar="BYTES", help="line cap (default 64 KiB)"
    )
    _add_common(logs)
    logs.set_defaults(handler=_run_logs)


def _add_forward(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument(
        "--forward",
        action="append",
        default=[],
        type=_forward,
        metavar="LISTEN=TO",
        help=f"raw forward, repeatable (e.g. {example})",
    )


def _add_common(parser: argparse.ArgumentParser) -> None:
    defaults = RelayOptions()
    add_daemon_arguments(
        parser,
        ready='when every listener is up, write {"pid": N, "listeners": {NAME: ADDRESS}} here '
        "(atomically; removed on exit). Listeners are named after their role (forwards "
        "forward-0, forward-1, ...); port 0 in --listen shows the port actually bound",
        log_level="diagnostics on stderr (default INFO: refusals and failures)",
        shutdown="open tunnels",
    )
    parser.add_argument(
        "--max-connections",
        type=_positive_int,
        default=defaults.max_connections,
        metavar="N",
        help=f"per listener; more are refused, not queued (default {defaults.max_connections})",
    )
    parser.add_argument(
        "--connect-timeout",
        type=_positive_float,
        default=defaults.connect_timeout,
        metavar="SECONDS",
        help=f"to resolve and dial a destination (default {defaults.connect_timeout:g})",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=defaults.idle_timeout,
        metavar="SECONDS",
        help="close tunnels idle this long; 0 never (default 600)",
    )
    parser.add_argument(
        "--keepalive",
        type=_keepalive,
        default=defaults.keepalive,
        metavar="SECONDS",
        help="TCP keepalive probes after this much silence; 0 the kernel's setting (default 60)",
    )


def _address(text: str) -> Address:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _forward(text: str) -> tuple[Address, Address]:
    listen, sep, to = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LISTEN=TO")
    return _address(listen), _address(to)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def _keepalive(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value == 0:
        return None
    if not 1 <= value <= MAX_KEEPALIVE:
        raise argparse.ArgumentTypeError(f"{text!r}: 0, or 1 to {MAX_KEEPALIVE} seconds")
    return value


def _options(args: argparse.Namespace) -> RelayOptions:
    idle = args.idle_timeout
    return RelayOptions(
        max_connections=args.max_connections,
        connect_timeout=args.connect_timeout,
        idle_timeout=None if not idle or idle <= 0 else idle,
        keepalive=args.keepalive,
    )


def _load(path: Path) -> Allowlist:
    try:
        return load_allowlist(path)
    except ConfigurationError as exc:
        if isinstance(exc.__cause__, OSError):
            raise env_error(str(exc)) from exc
        raise invalid_input(str(exc)) from exc


def _run_enclave_egress(args: argparse.Namespace) -> int:
    roles: list[Role] = []
    if (args.listen is None) != (args.parent is None):
        raise usage_error("--listen and --parent go together")
    if args.listen is not None:
        roles.append(EnclaveEgress(listen=args.listen, parent=args.parent))
    roles += _forwards([(listen, to, None) for listen, to in args.forward])
    if not roles:
        raise usage_error("give --listen and --parent, or at least one --forward")
    return _serve(args, roles, resolver=None)


def _run_parent_egress(args: argparse.Namespace) -> int:
    allowlist = None if args.allowlist is None else _load(args.allowlist)
    roles: list[Role] = []
    if args.listen is not None:
        if allowlist is None:
            raise usage_error("--listen needs --allowlist FILE (deny by default)")
        roles.append(ParentEgress(listen=args.listen, allowlist=allowlist))
        warn_if_exposed(args.listen, "parent-egress", logging.getLogger("attested.relay"))
    guarded: list[tuple[Address, Address, Allowlist | None]] = []
    for listen, to in args.forward:
        if to.kind != "tcp":
            raise usage_error(f"--forward destination {to} must be tcp:HOST:PORT")
        guard = allowlist if allowlist is not None else Allowlist.of((to.host, to.port))
        guarded.append((listen, to, guard))
    roles += _forwards(guarded)
    if not roles:
        raise usage_error("give --listen with --allowlist, or at least one --forward")
    try:
        resolver = SystemResolver(family=args.ip_version, cache_seconds=args.dns_cache)
    except ValueError as exc:
        raise usage_error(str(exc)) from exc
    return _serve(args, roles, resolver=resolver)


def _run_ingress(args: argparse.Namespace) -> int:
    return _serve(args, [Forward(listen=args.listen, to=args.to, name="ingress")], resolver=None)


def _run_logs(args: argparse.Namespace) -> int:
    if args.max_line < 128:
        raise usage_error("--max-line must be at least 128")
    out = None if args.out == "-" else Path(args.out)
    return _serve(
        args, [LogSink(listen=args.listen, out=out, max_line=args.max_line)], resolver=None
    )


def _forwards(forwards: Sequence[tuple[Address, Address, Allowlist | None]]) -> list[Role]:
    roles: list[Role] = []
    for index, (listen, to, guard) in enumerate(forwards):
        try:
            roles.append(Forward(listen=listen, to=to, allowlist=guard, name=f"forward-{index}"))
        except ConfigurationError as exc:
            raise usage_error(str(exc)) from exc
    return roles


def _serve(args: argparse.Namespace, roles: list[Role], *, resolver: SystemResolver | None) -> int:
    with diagnostics_on_stderr(args.log_level) as diagnostics:
        relay = Relay(roles, options=_options(args), resolver=resolver)
        return run_part(
            relay,
            command="relay",
            what="the relay",
            ready_file=args.ready_file,
            deadline=args.shutdown_timeout,
            reopen=relay.reopen,
            diagnostics=diagnostics,
        )
