"""Recipe docs/recipes/logs-to-cloudwatch.md: the sink's real output against the Fluent Bit parser.

Fluent Bit is not installable here and nothing reaches AWS: the recipe says it was not run
end to end. This test ships records through the real handler and sink, then checks every
line of the file against the parser in docs/recipes/fluent-bit/parsers.conf: one JSON
object per line, the Time_Key on every line and parsed by the Time_Format, every value a
string or a number (``truncated`` is the one boolean, on cut records only).
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from attested.parent import Parent
from attested.relay import VsockLogHandler
from tests.relay.support import tcp, wait_acked

pytestmark = [pytest.mark.recipes, pytest.mark.integration]

RECIPES = Path(__file__).parents[2] / "docs" / "recipes"


def fluent_bit_parser(path: Path, name: str) -> dict[str, str]:
    """One ``[PARSER]`` section of a Fluent Bit classic parsers file, keys lower-cased."""
    sections: list[dict[str, str]] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            sections.append({"[section]": line.strip("[]").upper()})
            continue
        key, _, value = line.partition(" ")
        sections[-1][key.lower()] = value.strip()
    (parser,) = (s for s in sections if s["[section]"] == "PARSER" and s.get("name") == name)
    return parser


def strptime_format(fluent_bit: str) -> str:
    """Fluent Bit's Time_Format in Python's terms: ``%L`` is its fractional seconds."""
    return fluent_bit.replace("%L", "%f")


def test_the_recipe_shows_the_parser_file_as_it_is() -> None:
    text = (RECIPES / "logs-to-cloudwatch.md").read_text()
    for name in ("parsers.conf", "fluent-bit.conf"):
        assert (RECIPES / "fluent-bit" / name).read_text() in text


def test_the_sinks_output_parses_with_the_recipes_fluent_bit_parser(
    run_parent: Callable[[str], Parent], tmp_path: Path
) -> None:
    parser = fluent_bit_parser(RECIPES / "fluent-bit" / "parsers.conf", "attested")
    assert parser["format"] == "json"
    parent = run_parent(
        """
        [logs]
        listen = "tcp:127.0.0.1:0"     # vsock:ANY:8090
        out = "enclave.log"
        max_line = 1024
        enclaves = {"127.0.0.1" = "payments"}
        """
    )
    handler = VsockLogHandler(parent.listeners["logs"], source="payments-enclave")
    logger = logging.getLogger("tests.recipes.fluent_bit")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        logger.info("order %s paid: %s", 42, "49.90 EUR")
        logger.warning('naïve unicode, a "quote", a tab\t and a newline\n inside')
        try:
            raise ValueError("declined")
        except ValueError:
            logger.exception("with a traceback")
        assert handler.drain(10)
    finally:
        logger.removeHandler(handler)
        handler.close()
    with socket.create_connection(tcp(parent.listeners["logs"]), timeout=10) as sock:
        sock.sendall(b"a plain line from a process that does not write JSON\n")
        sock.sendall(b'{"level": "ERROR", "message": "' + b"x" * 5000 + b'"}\n')
        wait_acked(sock, 2)  # both lines written, not only the first batch

    raw = (tmp_path / "enclave.log").read_bytes()
    lines = raw.split(b"\n")
    assert lines[-1] == b""  # every line ends with a newline
    lines = lines[:-1]
    assert len(lines) == 5
    time_key, time_format = parser["time_key"], strptime_format(parser["time_format"])
    for line in lines:
        assert line.isascii()
        assert len(line) < 128 * 1024  # the recipe's Buffer_Max_Size
        record = json.loads(line)  # one JSON object per line
        assert isinstance(record, dict)
        datetime.strptime(str(record[time_key]), time_format)
        for key, value in record.items():
            if key == "truncated":
                assert value is True
            else:
                assert isinstance(value, str | int | float), (key, value)
                assert not isinstance(value, bool), (key, value)
        assert record["enclave"] == "payments"
    records = [json.loads(line) for line in lines]
    assert records[0]["message"] == "order 42 paid: 49.90 EUR"
    assert "declined" in records[2]["exception"]
    assert records[3]["message"].startswith("a plain line")
    assert records[4]["truncated"] is True
    assert records[4]["level"] == "ERROR"
