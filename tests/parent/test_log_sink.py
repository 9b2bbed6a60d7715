"""The parent's log sink: who sent each record and when it arrived, and cuts that keep it whole.

Real loopback sockets (TCP stands in for vsock) and the enclave's real VsockLogHandler.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attested.errors import ConfigError
from attested.parent import Parent, parse_parent_config
from attested.relay import VsockLogHandler
from attested.relay._logs import LineSplitter, received_stamp, sanitize_line
from tests.relay.support import recv_exactly, tcp, wait_acked

pytestmark = pytest.mark.integration


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def records(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def sink(run_parent: Callable[[str], Parent], extra: str = "") -> Parent:
    return run_parent(
        f"""
        [logs]
        listen = "tcp:127.0.0.1:0"
        out = "enclave.log"
        enclaves = {{"127.0.0.1" = "payments"}}
        {extra}
        """
    )


def test_a_shipped_line_arrives_with_its_receive_time_and_sender(
    run_parent: Callable[[str], Parent], tmp_path: Path
) -> None:
    parent = sink(run_parent)
    handler = VsockLogHandler(parent.listeners["logs"], source="payments-enclave")
    logger = logging.getLogger("tests.parent.sink")
    logger.propagate = False
    logger.addHandler(handler)
    before = time.time()
    try:
        logger.warning("card declined for order %s", 42)
        assert handler.drain(10)
    finally:
        logger.removeHandler(handler)
        handler.close()
    (record,) = records(tmp_path / "enclave.log")
    assert record["message"] == "card declined for order 42"
    assert record["level"] == "WARNING"
    assert record["source"] == "payments-enclave"
    received = datetime.fromisoformat(str(record["received"]).replace("Z", "+00:00"))
    assert before - 1 <= received.timestamp() <= time.time() + 1
    assert str(record["received"]).endswith("Z")
    assert str(record["peer"]).startswith("tcp:127.0.0.1:")
    assert record["enclave"] == "payments"  # the name the configuration gives that sender


def test_a_sender_cannot_choose_its_own_sender_fields(
    run_parent: Callable[[str], Parent], tmp_path: Path
) -> None:
    parent = sink(run_parent)
    forged = b'{"message": "hi", "enclave": "admin", "peer": "vsock:3:1", "received": "x"}\n'
    with socket.create_connection(tcp(parent.listeners["logs"]), timeout=10) as sock:
        sock.sendall(forged)
        recv_exactly(sock, 8)
        port = sock.getsockname()[1]
    (record,) = records(tmp_path / "enclave.log")
    assert record["enclave"] == "payments"
    assert record["peer"] == f"tcp:127.0.0.1:{port}"
    assert record["received"] != "x"


@pytest.mark.parametrize("message_first", [False, True])
def test_an_over_long_record_is_cut_inside_its_message(
    run_parent: Callable[[str], Parent], tmp_path: Path, message_first: bool
) -> None:
    parent = sink(run_parent, "max_line = 1024")
    fields = {
        "time": "2025-01-02T03:04:05.000006Z",
        "level": "ERROR",
        "logger": "app.payments",
        "source": "payments-enclave",
        "exception": "Traceback ...",
    }
    message = {"message": "é" + "m" * 20_000}
    record = {**message, **fields} if message_first else {**fields, **message}
    with socket.create_connection(tcp(parent.listeners["logs"]), timeout=10) as sock:
        sock.sendall(json.dumps(record).encode() + b"\n")
        recv_exactly(sock, 8)
    raw = (tmp_path / "enclave.log").read_bytes()
    assert len(raw) <= 1024
    assert raw.count(b"\n") == 1
    (written,) = records(tmp_path / "enclave.log")
    for key in ("time", "level", "logger", "source"):
        assert written[key] == fields[key]
    assert written["truncated"] is True
    assert str(written["message"]).startswith("ém")
    assert 500 < len(str(written["message"])) < 1024
    assert written["enclave"] == "payments"
    assert "exception" not in written  # other fields give way to the message


def test_a_line_beyond_max_record_is_kept_as_text(
    run_parent: Callable[[str], Parent], tmp_path: Path
) -> None:
    parent = sink(run_parent, "max_line = 512\nmax_record = 2048")
    with socket.create_connection(tcp(parent.listeners["logs"]), timeout=10) as sock:
        sock.sendall(b'{"level": "INFO", "message": "' + b"x" * 5000 + b'"}\nafter\n')
        wait_acked(sock, 2)
    cut, after = records(tmp_path / "enclave.log")
    assert cut["truncated"] is True
    assert str(cut["message"]).startswith('{"level": "INFO"')
    assert after["message"] == "after"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('{"x" = "a"}', "'x' is neither a vsock CID nor an IP address"),
        ('{"16" = ""}', "16: the name must be 1 to 64 characters"),
        ('{"16" = "a\\nb"}', "16: the name must be printable"),
        ('"payments"', "must be a table"),
    ],
)
def test_enclave_names_are_checked(value: str, problem: str) -> None:
    text = f'[logs]\nlisten = "tcp:127.0.0.1:0"\nout = "-"\nenclaves = {value}\n'
    with pytest.raises(ConfigError) as caught:
        parse_parent_config(text)
    (found,) = caught.value.problems
    assert found.startswith(f"logs.enclaves: {problem}")


def test_enclave_names_and_max_record_are_read() -> None:
    config = parse_parent_config(
        '[logs]\nlisten = "vsock:ANY:8090"\nout = "-"\nmax_line = 1024\nmax_record = 4096\n'
        'enclaves = {"16" = "payments", "::1" = "local"}\n'
    )
    assert config.logs is not None
    assert dict(config.logs.enclaves) == {"16": "payments", "::1": "local"}
    assert config.logs.max_record == 4096
    with pytest.raises(ConfigError) as caught:
        parse_parent_config('[logs]\nlisten = "tcp:127.0.0.1:0"\nout = "-"\nmax_record = 200\n')
    assert caught.value.problems[0].startswith("logs.max_record: ")


STAMP = received_stamp("vsock:16:1234", "payments", now=0.0)


@given(st.binary(max_size=3000), st.integers(256, 1024))
def test_any_line_becomes_one_stamped_object_under_the_cap(line: bytes, cap: int) -> None:
    out = sanitize_line(line.replace(b"\n", b" "), max_line=cap, stamp=STAMP)
    assert out.endswith(b"\n")
    assert b"\n" not in out[:-1]
    assert out.isascii()
    assert len(out) <= cap
    record = json.loads(out)
    assert {k: record[k] for k in STAMP} == STAMP


@given(
    st.dictionaries(
        st.text(max_size=20), st.one_of(st.text(max_size=400), st.integers()), max_size=8
    ),
    st.integers(256, 1024),
)
def test_any_object_keeps_its_small_named_fields_when_cut(
    fields: dict[str, object], cap: int
) -> None:
    record = {**fields, "level": "INFO", "logger": "a.b", "message": "z" * 5000}
    splitter = LineSplitter(cap)
    (out,), ended = splitter.feed(json.dumps(record).encode() + b"\n", STAMP)
    assert ended == 1
    assert len(out) <= cap
    written = json.loads(out)
    assert (written["level"], written["logger"], written["truncated"]) == ("INFO", "a.b", True)
    assert written["enclave"] == "payments"
