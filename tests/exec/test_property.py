"""Every parser of ``attested exec`` answers arbitrary input with our own errors only.

The new configuration sections (through serve's loader), S3 URLs, base64 ciphertexts,
stored values, Secrets Manager ARNs, the hosts file and the app's output lines.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from attested._aws import REGION, SECRETSMANAGER_ARN
from attested.errors import ConfigError, MalformedError
from attested.exec import HostEntry, SetupError, load_exec_config, parse_s3_url
from attested.exec._config import MAX_CIPHERTEXT, decode_ciphertext_text
from attested.exec._net import HOSTS_BEGIN, write_hosts
from attested.exec._output import OutputPump
from attested.exec._stores import ciphertext_from_bytes
from tests.exec.support import toml_value

SECRET_KEYS = ["name", "ciphertext", "ciphertext_file", "secretsmanager", "ssm", "s3", "key_id",
               "encryption_context", "env", "file", "owner", "mode", "optional"]  # fmt: skip
HOST_KEYS = ["name", "address", "ports"]
INGRESS_KEYS = ["listen", "to"]
EXEC_KEYS = ["app_name", "hosts_file", "loopback", "tmpfs", "stop_timeout", "subreaper",
             "proxy_env", "parallel", "secretsmanager_endpoint_url", "ssm_endpoint_url",
             "s3_endpoint_url"]  # fmt: skip

scalars = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["AQID", "/run/secrets/x", "s3://bucket/key", "127.0.0.10", "0400",
                     "tcp:127.0.0.1:0", "vsock:ANY:8443", "arn:aws:secretsmanager:us-east-1:"
                     "111122223333:secret:a", "root", "0:0", "*", "require", "warn"]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


def table(keys: list[str]) -> st.SearchStrategy[dict[str, object]]:
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=8), values, max_size=6)


documents = st.fixed_dictionaries(
    {},
    optional={
        "secrets": st.lists(table(SECRET_KEYS), max_size=4) | values,
        "hosts": st.lists(table(HOST_KEYS), max_size=3) | values,
        "ingress": st.lists(table(INGRESS_KEYS), max_size=2),
        "exec": table(EXEC_KEYS) | values,
    },
)


def render(document: dict[str, object]) -> str:
    lines = ['[kms]\nallowed_keys = ["*"]']
    for key, value in document.items():
        lines.append(f"{key} = {toml_value(value)}")
    return "\n".join([lines[0], *(line for line in lines[1:])]).replace(
        '[kms]\nallowed_keys = ["*"]', 'kms = { allowed_keys = ["*"] }'
    )


@settings(max_examples=200)
@given(documents)
def test_the_sections_raise_only_config_error(document: dict[str, object]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "enclave.toml"
        try:
            path.write_text(render(document), encoding="utf-8", errors="surrogatepass")
        except UnicodeEncodeError:
            return
        try:
            config = load_exec_config(path, {})
        except ConfigError as exc:
            problems = exc.problems
            assert problems
            return
    for secret in config.secrets:
        assert secret.env or secret.file


@given(st.text(max_size=1200))
def test_s3_urls_raise_only_value_error(text: str) -> None:
    try:
        bucket, key = parse_s3_url(text)
    except ValueError:
        return
    assert text == f"s3://{bucket}/{key}"
    assert 3 <= len(bucket) <= 63
    assert 1 <= len(key.encode()) <= 1024


@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_ciphertext_text_raises_only_value_error(text: str) -> None:
    try:
        blob = decode_ciphertext_text(text)
    except ValueError as exc:  # a fixed message: never the text itself
        message = str(exc)
        assert message.startswith(("is longer than", "is not standard", "must decode"))
        return
    assert 1 <= len(blob) <= MAX_CIPHERTEXT


@given(st.binary(max_size=20000))
def test_stored_values_raise_only_malformed_error(data: bytes) -> None:
    try:
        blob = ciphertext_from_bytes(data, what="the item")
    except MalformedError:
        return
    assert 1 <= len(blob) <= MAX_CIPHERTEXT


@given(st.text(max_size=700))
def test_secretsmanager_arns(text: str) -> None:
    match = SECRETSMANAGER_ARN.fullmatch(text)
    if match is not None:
        assert REGION.fullmatch(match.group("region"))
        assert match.group("account").isascii()
        assert len(match.group("account")) == 12


@settings(max_examples=100)
@given(st.binary(max_size=4000))
def test_any_hosts_file_is_kept_or_refused_with_a_setup_error(existing: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "hosts"
        path.write_bytes(existing)
        try:
            write_hosts(path, [HostEntry(name="a.example", address="127.0.0.10")])
        except SetupError:
            assert path.read_bytes() == existing  # untouched
            return
        text = path.read_text()
    assert text.count(HOSTS_BEGIN) == 1
    assert "127.0.0.10\ta.example" in text


class _Collect(logging.Handler):
    """A real logging handler that keeps what it is given (the shipper's interface)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@settings(max_examples=100)
@given(st.lists(st.binary(min_size=1, max_size=700), max_size=12))
def test_output_lines_are_split_capped_and_complete(chunks: list[bytes]) -> None:
    read, write = os.pipe()
    shipper = _Collect()
    with tempfile.TemporaryFile() as console:
        pump = OutputPump(read, stream="stdout", console=console, shipper=shipper,  # type: ignore[arg-type]
                          max_line=256)  # fmt: skip
        for chunk in chunks:
            os.write(write, chunk)
        os.close(write)
        assert pump.join(30)
        pump.close()
        console.seek(0)
        written = console.read()
    data = b"".join(chunks)
    assert all(
        len(message.encode("utf-8", "surrogatepass")) <= 256 * 3 for message in shipper.messages
    )
    assert written.replace(b"\n", b"") == data.replace(b"\n", b"")
    assert len(shipper.messages) == pump.lines
