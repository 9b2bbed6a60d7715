"""Relay throughput and connection rate on loopback, against socat and direct, in one run.

Chains measured (every relay is a separate process, as in production):

* direct:        client -> server
* ours-forward:  client -> ``attested relay enclave-egress --forward`` ->
                 ``attested relay parent-egress --forward`` (fixed destination, DNS rules)
                 -> server. Raw bytes, no header: the like-for-like comparison with socat.
* ours-connect:  client -> ``enclave-egress`` (HTTP CONNECT) -> ``parent-egress`` (tunnel
                 header, allowlist) -> server. What boto3 uses; one CONNECT per connection.
* socat:         two ``socat TCP-LISTEN:P,fork,reuseaddr TCP:127.0.0.1:Q`` (the seeds' options)
* socat-b128k:   the same with ``-b 131072``

Bulk: one connection carries ``--bulk-mib`` MiB (1024 by default) to a sink that counts
it. Rate: ``--connections`` short connections (64 bytes each way, then close) from
``--concurrency`` concurrent clients. Then 1,000 connections held open at once: time until
every one has had its echo, and the slowest single connection. Rounds alternate between
chains; the median round is reported. socat rows are skipped if socat is not installed.

Usage: python bench/relay_bench.py [--bulk-mib N] [--rounds N] [--connections N]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
MESSAGE = b"m" * 64
HELD = 1000


# -- servers (child processes) -------------------------------------------------------------


def _sink_server(port_queue: multiprocessing.Queue[int]) -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    port_queue.put(listener.getsockname()[1])
    buffer = bytearray(1 << 20)

    def serve(conn: socket.socket) -> None:
        total = 0
        with conn:
            while n := conn.recv_into(buffer):
                total += n
            conn.sendall(str(total).encode())

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def _echo_server(port_queue: multiprocessing.Queue[int]) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, _nofile())

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
        port_queue.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


def _nofile() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 16384 if hard == resource.RLIM_INFINITY else min(hard, 16384)
    return (max(soft, wanted), hard)


# -- relay processes -----------------------------------------------------------------------


class Processes:
    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes] | multiprocessing.process.BaseProcess] = []

    def server(self, target: Callable[[multiprocessing.Queue[int]], None]) -> int:
        context = multiprocessing.get_context("spawn")
        queue: multiprocessing.Queue[int] = context.Queue()
        process = context.Process(target=target, args=(queue,), daemon=True)
        process.start()
        self.running.append(process)
        return queue.get(timeout=30)

    def attested(self, *args: str) -> list[int]:
        """Start ``attested relay ARGS``; return the ports it listens on."""
        process = subprocess.Popen(
            [sys.executable, "-m", "attested", "relay", *args, "--log-level", "WARNING"],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        self.running.append(process)
        assert process.stderr is not None
        ports: list[int] = []
        expected = sum(1 for a in args if a in ("--listen", "--forward"))
        while len(ports) < expected:
            line = process.stderr.readline().decode()
            if not line:
                raise RuntimeError(f"attested relay {' '.join(args)} exited")
            if " listening on " in line:
                ports.append(int(line.rsplit(":", 1)[1]))
        threading.Thread(target=process.stderr.read, daemon=True).start()  # keep draining
        return ports

    def socat(self, listen: int, to: int, *options: str) -> None:
        process = subprocess.Popen(
            [
                shutil.which("socat") or "/usr/bin/socat",
                *options,
                f"TCP-LISTEN:{listen},bind=127.0.0.1,fork,reuseaddr",
                f"TCP:127.0.0.1:{to}",
            ],
            stderr=subprocess.DEVNULL,
        )
        self.running.append(process)
        _wait_listening(listen)

    def stop(self) -> None:
        for process in self.running:
            if isinstance(process, subprocess.Popen):
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
            else:
                process.terminate()
                process.join(5)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_listening(port: int) -> None:
    end = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.02)


# -- clients -------------------------------------------------------------------------------


class Chain:
    def __init__(self, name: str, sink: int, echo: int, *, connect: bool) -> None:
        self.name = name
        self.sink_port = sink  # where bulk clients connect
        self.echo_port = echo  # where short-connection clients connect
        self.connect = connect  # send CONNECT first
        self.sink_target = 0  # the real server ports (for CONNECT requests)
        self.echo_target = 0


def _handshake(sock: socket.socket, port: int) -> None:
    sock.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += sock.recv(1)
    if not head.startswith(b"HTTP/1.1 200 "):
        raise RuntimeError(head.decode(errors="replace"))


def bulk(chain: Chain, size: int) -> float:
    """Bytes per second for one connection carrying ``size`` bytes."""
    chunk = memoryview(bytes(1 << 20))
    with socket.create_connection(("127.0.0.1", chain.sink_port)) as sock:
        if chain.connect:
            _handshake(sock, chain.sink_target)
        start = time.perf_counter()
        sent = 0
        while sent < size:
            sock.sendall(chunk)
            sent += len(chunk)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while data := sock.recv(64):
            answer += data
        elapsed = time.perf_counter() - start
    if int(answer) != sent:
        raise RuntimeError(f"{chain.name}: sink got {answer!r} of {sent}")
    return sent / elapsed


async def _one(chain: Chain) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", chain.echo_port)
    try:
        if chain.connect:
            writer.write(f"CONNECT 127.0.0.1:{chain.echo_target} HTTP/1.1\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200 "):
                raise RuntimeError(head.decode(errors="replace"))
        writer.write(MESSAGE)
        if await reader.readexactly(len(MESSAGE)) != MESSAGE:
            raise RuntimeError("echo mismatch")
    finally:
        writer.close()


def rate(chain: Chain, count: int, concurrency: int) -> float:
    """Short connections per second."""

    async def run() -> float:
        left = count

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await _one(chain)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return count / (time.perf_counter() - start)

    return asyncio.run(run())


def held(chain: Chain) -> tuple[float, float]:
    """1,000 connections opened at once and held: (seconds until all echoed, slowest one)."""

    async def run() -> tuple[float, float]:
        all_open = asyncio.Event()
        opened = 0
        slowest = 0.0

        async def one() -> None:
            nonlocal opened, slowest
            begin = time.perf_counter()
            reader, writer = await asyncio.open_connection("127.0.0.1", chain.echo_port)
            try:
                if chain.connect:
                    writer.write(f"CONNECT 127.0.0.1:{chain.echo_target} HTTP/1.1\r\n\r\n".encode())
                    await reader.readuntil(b"\r\n\r\n")
                writer.write(MESSAGE)
                await reader.readexactly(len(MESSAGE))
                slowest = max(slowest, time.perf_counter() - begin)
                opened += 1
                if opened == HELD:
                    all_open.set()
                await asyncio.wait_for(all_open.wait(), 60)
            finally:
                writer.close()

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(HELD)))
        return time.perf_counter() - start, slowest

    return asyncio.run(run())


# -- main ------------------------------------------------------------------------------


def build_chains(procs: Processes, sink: int, echo: int, allowlist: Path) -> list[Chain]:
    chains = [Chain("direct", sink, echo, connect=False)]
    (p_sink, p_echo) = procs.attested(
        "parent-egress",
        "--forward",
        f"tcp:127.0.0.1:0=tcp:127.0.0.1:{sink}",
        "--forward",
        f"tcp:127.0.0.1:0=tcp:127.0.0.1:{echo}",
    )
    (e_sink, e_echo) = procs.attested(
        "enclave-egress",
        "--forward",
        f"tcp:127.0.0.1:0=tcp:127.0.0.1:{p_sink}",
        "--forward",
        f"tcp:127.0.0.1:0=tcp:127.0.0.1:{p_echo}",
    )
    chains.append(Chain("ours-forward", e_sink, e_echo, connect=False))
    (parent,) = procs.attested(
        "parent-egress", "--listen", "tcp:127.0.0.1:0", "--allowlist", str(allowlist)
    )
    (proxy,) = procs.attested(
        "enclave-egress", "--listen", "tcp:127.0.0.1:0", "--parent", f"tcp:127.0.0.1:{parent}"
    )
    connect = Chain("ours-connect", proxy, proxy, connect=True)
    connect.sink_target, connect.echo_target = sink, echo
    chains.append(connect)
    if shutil.which("socat") is None:
        print("socat is not installed: socat rows skipped (apt-get install socat)")
        return chains
    for name, options in (("socat", ()), ("socat-b128k", ("-b", "131072"))):
        ports = []
        for server in (sink, echo):
            outer, inner = _free_port(), _free_port()
            procs.socat(inner, server, *options)
            procs.socat(outer, inner, *options)
            ports.append(outer)
        chains.append(Chain(name, ports[0], ports[1], connect=False))
    return chains


def _ratio(results: dict[str, float], a: str, b: str) -> str:
    if a not in results or b not in results:
        return "n/a"
    return f"{results[a] / results[b]:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bulk-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, _nofile())
    procs = Processes()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            sink = procs.server(_sink_server)
            echo = procs.server(_echo_server)
            allowlist = Path(tmp) / "allowlist.yaml"
            allowlist.write_text(
                "allowlist:\n"
                f"- {{address: 127.0.0.1, port: {sink}}}\n"
                f"- {{address: 127.0.0.1, port: {echo}}}\n"
            )
            chains = build_chains(procs, sink, echo, allowlist)
            run(chains, args)
        finally:
            procs.stop()


def run(chains: list[Chain], args: argparse.Namespace) -> None:
    size = args.bulk_mib * 1024 * 1024
    bulk_rounds: dict[str, list[float]] = {c.name: [] for c in chains}
    rate_rounds: dict[str, list[float]] = {c.name: [] for c in chains}
    for chain in chains:  # warm up every path once
        bulk(chain, 16 * 1024 * 1024)
        rate(chain, 100, args.concurrency)
    for _ in range(args.rounds):
        for chain in chains:
            bulk_rounds[chain.name].append(bulk(chain, size))
            rate_rounds[chain.name].append(rate(chain, args.connections, args.concurrency))
    bulks = {name: statistics.median(v) for name, v in bulk_rounds.items()}
    rates = {name: statistics.median(v) for name, v in rate_rounds.items()}
    print(
        f"loopback, {args.bulk_mib} MiB bulk, {args.connections} short connections "
        f"x {args.rounds} rounds (median), {os.cpu_count()} CPUs"
    )
    print(f"{'chain':<14} {'bulk MB/s':>10} {'vs direct':>10} {'conn/s':>9} {'vs direct':>10}")
    for name in bulks:
        print(
            f"{name:<14} {bulks[name] / 1e6:>10.0f} {_ratio(bulks, name, 'direct'):>10} "
            f"{rates[name]:>9.0f} {_ratio(rates, name, 'direct'):>10}"
        )
    print()
    print("targets: bulk >= 1.5x socat and >= 1.0x socat -b 131072; rate >= 1.5x socat")
    for ours in ("ours-forward", "ours-connect"):
        print(
            f"{ours}: bulk {_ratio(bulks, ours, 'socat')} of socat, "
            f"{_ratio(bulks, ours, 'socat-b128k')} of socat -b 131072; "
            f"rate {_ratio(rates, ours, 'socat')} of socat"
        )
    print()
    print(f"{HELD} connections opened at once and held open until all had their echo:")
    baseline = None
    for chain in chains:
        if chain.name.startswith("socat"):
            continue  # one fork per connection: measured above
        total, slowest = held(chain)
        baseline = baseline or slowest
        print(
            f"  {chain.name:<14} all served in {total:.2f} s, slowest connection "
            f"{slowest * 1000:.0f} ms ({slowest / baseline:.1f}x direct)"
        )


if __name__ == "__main__":
    main()
