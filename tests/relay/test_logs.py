"""Log shipping: the never-blocking handler, the parent's sink, restarts and drops."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attested.net import Address
from attested.relay import LogSink, Relay, VsockLogHandler
from attested.relay._logs import ACK, SINK_FIELDS, LineSplitter, sanitize_line
from tests.relay.support import closed_port, loopback, recv_exactly, tcp

pytestmark = pytest.mark.integration


@pytest.fixture
def handlers() -> Iterator[Callable[..., VsockLogHandler]]:
    made: list[VsockLogHandler] = []

    def make(address: Address, **kwargs: object) -> VsockLogHandler:
        kwargs.setdefault("max_backoff", 0.1)
        kwargs.setdefault("close_timeout", 0.5)
        handler = VsockLogHandler(address, **kwargs)  # type: ignore[arg-type]
        made.append(handler)
        return handler

    yield make
    for handler in made:
        handler.close()


def logger_for(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(f"tests.relay.logs.{name}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def read_lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def start_sink(out: Path, port: int = 0) -> tuple[Relay, Address]:
    relay = Relay([LogSink(listen=loopback(port), out=out)])
    (address,) = relay.start()
    return relay, address


def test_records_arrive_as_json_lines_in_order(tmp_path, handlers) -> None:
    out = tmp_path / "enclave.log"
    sink, address = start_sink(out)
    try:
        handler = handlers(address, source="enclave-16")
        logger = logger_for(handler, "order")
        for i in range(200):
            logger.info("record %d", i)
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("with a traceback")
        assert handler.drain(10)
        records = read_lines(out)
        assert [r["message"] for r in records[:200]] == [f"record {i}" for i in range(200)]
        assert records[0]["level"] == "INFO"
        assert records[0]["source"] == "enclave-16"
        assert str(records[0]["time"]).endswith("Z")
        assert "ValueError: boom" in str(records[200]["exception"])
        assert handler.stats().delivered == 201
        assert sink.stats()["logs"].records == 201
    finally:
        sink.stop(1.0)


def test_lines_survive_a_parent_restart_up_to_the_buffer(tmp_path, handlers) -> None:
    out = tmp_path / "enclave.log"
    sink, address = start_sink(out)
    handler = handlers(address, max_records=50)
    logger = logger_for(handler, "restart")
    for i in range(10):
        logger.warning("before %d", i)
    assert handler.drain(10)
    sink.stop(1.0)
    for i in range(30):
        logger.warning("while down %d", i)
    wait_for(lambda: not handler.stats().connected)
    assert handler.stats().buffered == 30
    sink, _ = start_sink(out, address.port or 0)  # the same port, as after a restart
    try:
        assert handler.drain(10)
        messages = [r["message"] for r in read_lines(out)]
        expected = [f"before {i}" for i in range(10)] + [f"while down {i}" for i in range(30)]
        assert messages == expected
        assert handler.stats().dropped == 0
    finally:
        sink.stop(1.0)


def test_drops_are_counted_and_reported_when_the_link_returns(tmp_path, handlers) -> None:
    port = closed_port()
    handler = handlers(loopback(port), max_records=10)
    logger = logger_for(handler, "drops")
    for i in range(25):
        logger.error("burst %d", i)
    stats = handler.stats()
    assert (stats.buffered, stats.dropped, stats.connected) == (10, 15, False)
    out = tmp_path / "enclave.log"
    sink, _ = start_sink(out, port)
    try:
        assert handler.drain(10)
        records = read_lines(out)
        assert records[0]["dropped"] == 15
        assert records[0]["level"] == "WARNING"
        assert [r["message"] for r in records[1:]] == [f"burst {i}" for i in range(10)]
    finally:
        sink.stop(1.0)


def test_emit_never_blocks_on_a_stalled_parent(handlers) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]))
    thread.start()
    try:
        port = listener.getsockname()[1]
        handler = handlers(loopback(port), max_bytes=1024 * 1024)
        logger = logger_for(handler, "stalled")
        wait_for(lambda: handler.stats().connected)
        message = "x" * 1000
        start = time.perf_counter()
        for _ in range(20_000):  # 20 MB into a parent that never reads
            logger.info(message)
        elapsed = time.perf_counter() - start
        assert elapsed < 5.0
        assert handler.stats().dropped > 0
    finally:
        thread.join(5)
        for sock in accepted:
            sock.close()
        listener.close()


def test_the_sink_sanitises_and_acknowledges(tmp_path) -> None:
    out = tmp_path / "raw.log"
    relay = Relay([LogSink(listen=loopback(), out=out, max_line=256)])
    (address,) = relay.start()
    try:
        with socket.create_connection(tcp(address)) as sock:
            peer = f"tcp:127.0.0.1:{sock.getsockname()[1]}"
            sock.sendall(
                b'{"message": "fine", "level": "INFO"}\n'
                b"plain text \x1b[31m with an escape\n"
                b"\xff\xfe not utf-8\n"
                b"[1, 2, 3]\n"
                b'{"n": NaN}\n' + b"y" * 1000 + b"\n"
                b'{"message": "after the long line"}\n'
                b"no newline at the end"
            )
            assert ACK.unpack(recv_exactly(sock, 8))[0] >= 1
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(64):
                pass
        wait_for(lambda: len(read_lines(out)) == 8)
        raw = out.read_bytes().splitlines()
        assert all(len(line) < 256 and line.isascii() for line in raw)
        stamped = read_lines(out)
        assert all(r["peer"] == peer and str(r["received"]).endswith("Z") for r in stamped)
        records = [{k: v for k, v in r.items() if k not in SINK_FIELDS} for r in stamped]
        assert records[0] == {"message": "fine", "level": "INFO"}
        assert records[1] == {"message": "plain text \x1b[31m with an escape"}
        assert "\ufffd" in str(records[2]["message"])
        assert records[3] == {"message": "[1, 2, 3]"}
        assert records[4] == {"message": '{"n": NaN}'}
        assert records[5]["truncated"] is True
        assert records[6] == {"message": "after the long line"}
        assert records[7] == {"message": "no newline at the end"}
    finally:
        relay.stop(1.0)


def test_reopen_after_rotation(tmp_path, handlers) -> None:
    out = tmp_path / "enclave.log"
    sink, address = start_sink(out)
    try:
        handler = handlers(address)
        logger = logger_for(handler, "rotate")
        logger.info("first")
        assert handler.drain(10)
        out.rename(tmp_path / "enclave.log.1")
        sink.reopen()
        wait_for(out.exists)
        logger.info("second")
        assert handler.drain(10)
        assert [r["message"] for r in read_lines(tmp_path / "enclave.log.1")] == ["first"]
        assert [r["message"] for r in read_lines(out)] == ["second"]
    finally:
        sink.stop(1.0)


def test_without_acknowledgements_a_plain_byte_sink_works(handlers) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        handler = handlers(loopback(listener.getsockname()[1]), acknowledged=False)
        logger_for(handler, "plain").info("to socat")
        conn, _ = listener.accept()
        with conn:
            line = b""
            while not line.endswith(b"\n"):
                line += conn.recv(4096)
        assert json.loads(line)["message"] == "to socat"
        wait_for(lambda: handler.stats().delivered == 1)
    finally:
        listener.close()


def test_oversized_messages_are_cut_on_the_enclave_side(handlers) -> None:
    handler = handlers(loopback(closed_port()), max_line=1024)
    logger_for(handler, "big").info("z" * 10_000)
    line = handler._queue[0]
    assert len(line) <= 1024
    assert json.loads(line)["truncated"] is True


# -- the pure line handling -----------------------------------------------------------------


@given(st.lists(st.binary(max_size=600), max_size=8), st.integers(128, 512))
def test_any_stream_becomes_json_object_lines_under_the_cap(chunks, cap) -> None:
    splitter = LineSplitter(cap)
    lines: list[bytes] = []
    ended = 0
    for chunk in chunks:
        out, count = splitter.feed(chunk)
        lines += out
        ended += count
    lines += splitter.finish()
    assert ended == sum(chunk.count(b"\n") for chunk in chunks)
    for line in lines:
        assert line.endswith(b"\n")
        assert b"\n" not in line[:-1]
        assert len(line) <= cap
        assert isinstance(json.loads(line), dict)


@given(st.binary(max_size=2000))
def test_sanitize_line_always_gives_one_object(line) -> None:
    out = sanitize_line(line, max_line=512)
    assert len(out) <= 512
    assert isinstance(json.loads(out), dict)
