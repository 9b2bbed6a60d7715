"""The TOML configuration parsers of `attested serve` and `attested parent` under fuzzing.

Whatever the bytes, the structure or the environment, the only error is ConfigError
(one message per problem); nothing else escapes, and nothing is started.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from attested.errors import ConfigError
from attested.parent import ParentConfig, parse_parent_config
from attested.parent._config import load_parent_config
from attested.service import ENV_VARS, ServiceConfig, load_config
from attested.service._config import _SCHEMA

_SERVICE_KEYS = {section: sorted(keys) for section, keys in _SCHEMA.items()}
_PARENT_KEYS = {
    "egress": ["listen", "allowlist", "allow", "hosts", "dns_cache", "max_connections"],
    "credentials": ["listen", "source", "allowed_peers", "imds_url"],
    "logs": ["listen", "out", "max_line"],
    "ingress": ["listen", "to", "max_connections"],
}

_scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(max_size=40),
    st.sampled_from(
        [
            "tcp:127.0.0.1:0",
            "vsock:ANY:8000",
            "vsock:3:8001",
            "unix:/tmp/x.sock",
            "127.0.0.1:8080",
            "simulated",
            "parent",
            "environment",
            "0660",
            "*",
            "http://127.0.0.1:3128",
        ]
    ),
)
_values = st.one_of(
    _scalars,
    st.lists(_scalars, max_size=4),
    st.dictionaries(st.text(max_size=10), _scalars, max_size=3),
)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def _document(sections: dict[str, dict[str, Any]], top: dict[str, Any]) -> str:
    lines = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in top.items()]
    for name, body in sections.items():
        lines.append(f"[{json.dumps(name)}]")
        lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


def _sections(known: dict[str, list[str]]) -> st.SearchStrategy[dict[str, dict[str, Any]]]:
    names = st.sampled_from([*sorted(known), "bogus"])

    def body(section: str) -> st.SearchStrategy[dict[str, Any]]:
        keys = st.sampled_from([*known.get(section, []), "typo"])
        return st.dictionaries(keys, _values, max_size=6)

    return st.dictionaries(names, st.just({}), max_size=5).flatmap(
        lambda chosen: st.fixed_dictionaries({name: body(name) for name in chosen})
    )


def _only_config_errors(load: Callable[[], object], kind: type) -> None:
    """``load()`` returns a ``kind`` or raises ConfigError with at least one problem."""
    try:
        result = load()
    except ConfigError as exc:
        if not exc.problems:
            raise AssertionError("ConfigError without problems") from exc
        return
    assert isinstance(result, kind)


def _load_service(data: bytes, env: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "serve.toml"
        path.write_bytes(data)
        _only_config_errors(lambda: load_config(path, env), ServiceConfig)


@given(st.binary(max_size=512))
def test_service_config_arbitrary_bytes(data: bytes) -> None:
    _load_service(data, {})


@given(
    _sections({k: v for k, v in _SERVICE_KEYS.items() if k}),
    st.dictionaries(st.sampled_from(_SERVICE_KEYS[""] + ["typo"]), _values, max_size=2),
    st.dictionaries(st.sampled_from(sorted(ENV_VARS)), st.text(max_size=30), max_size=4),
)
def test_service_config_arbitrary_structure_and_environment(
    sections: dict[str, dict[str, Any]], top: dict[str, Any], env: dict[str, str]
) -> None:
    _load_service(_document(sections, top).encode(), env)


@given(st.binary(max_size=512))
def test_parent_config_arbitrary_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "parent.toml"
        path.write_bytes(data)
        _only_config_errors(lambda: load_parent_config(path), ParentConfig)


@given(_sections(_PARENT_KEYS))
def test_parent_config_arbitrary_structure(sections: dict[str, dict[str, Any]]) -> None:
    text = _document(sections, {})
    _only_config_errors(
        lambda: parse_parent_config(text, base=Path(tempfile.gettempdir())), ParentConfig
    )
