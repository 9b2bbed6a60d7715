"""The configuration loaders of `attested serve`, `attested parent` and the emulator, fuzzed.

Whatever the bytes, the structure, the values or the environment, the only error is
ConfigError (one message per problem) for `serve` and `parent`, and ConfigurationError
for the emulator's identities file; nothing else escapes, and nothing is started.

Three kinds of input:

* (a) arbitrary bytes and TOML-looking text, including deep nesting;
* (b) documents with every real key of the schema, holding arbitrary TOML values: odd
  Unicode (superscript and Arabic-Indic digits, controls, NUL), huge integers, infinities,
  dates, nested tables and lists, and URL- and address-shaped strings that break parsers;
* (c) arbitrary ``ATTESTED_*`` environment overrides.

The default profile runs a CI-sized count. A long campaign, with fresh random examples::

    CONFIG_FUZZ_EXAMPLES=20000 HYPOTHESIS_PROFILE=fuzz \
        .venv/bin/python -m pytest tests/property/test_config_parsers.py --timeout=0
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attested.emulator import EmulatorConfig, load_identities
from attested.emulator._config import _IDENTITY_FIELDS, emulator_config, parse_identities
from attested.errors import ConfigError, ConfigurationError
from attested.parent import ParentConfig, parse_parent_config
from attested.parent._config import load_parent_config
from attested.service import ENV_VARS, ServiceConfig, load_config
from attested.service._config import _SCHEMA
from attested.trust import TrustRoot

_F = TypeVar("_F", bound=Callable[..., None])
_T = TypeVar("_T")
_EXAMPLES = int(os.environ.get("CONFIG_FUZZ_EXAMPLES", "0"))


def _short(strategy: st.SearchStrategy[_T]) -> st.SearchStrategy[_T]:
    """``strategy`` behind a composite, whose repr is a few characters.

    Hypothesis puts the strategy's repr in the message of an error raised while drawing,
    and warns (an error under our filterwarnings) when that repr is over 30 kB, which
    would hide the real error; these strategies' own reprs are hundreds of kB.
    """

    @st.composite
    def drawn(draw: st.DrawFn) -> _T:
        return draw(strategy)

    return drawn()


def _fuzz(ci_examples: int) -> Callable[[_F], _F]:
    """``ci_examples`` by default; ``CONFIG_FUZZ_EXAMPLES`` overrides it for long runs."""
    return settings(max_examples=_EXAMPLES or ci_examples)


_SERVICE_KEYS = {section: sorted(keys) for section, keys in _SCHEMA.items()}
_PARENT_KEYS = {
    "egress": [
        "listen",
        "allowlist",
        "allow",
        "hosts",
        "dns_cache",
        "ip_version",
        "max_connections",
        "connect_timeout",
        "idle_timeout",
    ],
    "credentials": ["listen", "source", "allowed_peers", "imds_url"],
    "logs": ["listen", "out", "max_line"],
    "ingress": [
        "listen",
        "to",
        "allow_parent_target",
        "max_connections",
        "connect_timeout",
        "idle_timeout",
    ],
}

# -- TOML values, written as TOML text -------------------------------------------------

# Characters that break naive parsers: digits that are not ASCII (str.isdigit() is true
# for some, int() accepts others), brackets, separators, controls, NUL, wide characters.
# ASCII, superscript, Arabic-Indic, extended Arabic-Indic, NKo, Devanagari, math bold:
_DIGITS = "0123456789\u00b2\u00b3\u00b9\u0661\u0662\u0663\u06f4\u07c0\u0966\U0001d7ce"
_ODD = _DIGITS + ":[]@%/.-_ \t\x00\x01\x7f\u200b\u00e9\u6f22\U0001f600"
_odd_text = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=30),
    st.text(st.sampled_from(_ODD), max_size=12),
)
_TEMPLATES = [
    "http://[{}",
    "http://[{}]:{}",
    "https://[{}]",
    "http://{}:{}",
    "http://{}@{}:80",
    "https://{}/{}",
    "http://127.0.0.1:{}",
    "http://[::1]:{}",
    "{}://{}",
    "tcp:{}:{}",
    "tcp:[{}]:{}",
    "tcp:127.0.0.1:{}",
    "vsock:{}:{}",
    "vsock:16:{}",
    "vsock:ANY:{}",
    "unix:{}{}",
    "{}:{}",
    "[{}]:{}",
    "parent:{}:{}",
    "/{}/{}",
    "0{}{}",
    "{}.{}",
    "arn:aws:kms:{}:{}",
]
_shaped = st.builds(
    lambda t, a, b: t.format(a, b), st.sampled_from(_TEMPLATES), _odd_text, _odd_text
)
_words = st.sampled_from(
    [
        "simulated",
        "auto",
        "parent",
        "environment",
        "imds",
        "*",
        "-",
        "0660",
        "0777",
        "us-east-1",
        "decrypt",
        "http://127.0.0.1:3128",
        "vsock:ANY:8000",
        "tcp:127.0.0.1:0",
        "/dev/zero",
        "/dev/null",
        "/",
        "/nonexistent/file",
        ".",
        "~",
        "~nobody/x",
    ]
) | st.sampled_from([300, 5000]).map(lambda n: "x" * n)  # longer than a name may be
_strings = st.one_of(_odd_text, _shaped, _words)


def _basic_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a TOML basic string (\u escapes, no surrogates)


_string_toml = st.one_of(
    _strings.map(_basic_string),
    _strings.filter(lambda s: "'" not in s and "\n" not in s and "\r" not in s).map(
        lambda s: f"'{s}'"
    ),
)
_number_toml = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.integers(min_value=0, max_value=70).map(lambda n: str(2**n)),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(
        [
            "inf",
            "-inf",
            "nan",
            "+nan",
            "1e308",
            "1e-320",
            "-0.0",
            "0x7fffffffffffffffffff",
            "0o777",
            "0b1",
        ]
    ),
    # more digits than int() converts by default, or than a float holds
    st.sampled_from([20, 400, 4301, 5000]).map(lambda n: "9" * n),
    st.sampled_from([17, 100, 1300]).map(lambda n: "0x" + "f" * n),
)
_other_toml = st.sampled_from(
    ["true", "false", "1979-05-27", "07:32:00", "1979-05-27T07:32:00Z", "1979-05-27T00:32:00"]
)
_scalar_toml = st.one_of(_string_toml, _number_toml, _other_toml)
_key_toml = st.one_of(
    _strings.map(_basic_string),
    st.sampled_from(["0", "1", "31", "32", "-1", "a", "listen", "address", "port"]),
    st.integers(min_value=-3, max_value=40).map(lambda n: _basic_string(str(n))),
)


def _array(items: list[str]) -> str:
    return "[" + ", ".join(items) + "]"


def _inline_table(pairs: dict[str, str]) -> str:
    return "{" + ", ".join(f"{key} = {value}" for key, value in pairs.items()) + "}"


_value_toml = st.recursive(
    _scalar_toml,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(_array),
        st.dictionaries(_key_toml, inner, max_size=4).map(_inline_table),
    ),
    max_leaves=12,
)
_deep_toml = st.builds(
    lambda depth, opener, closer: opener * depth + closer * depth,
    st.integers(min_value=1, max_value=5000),
    st.sampled_from(["[", "{a = "]),
    st.just(""),
).map(lambda text: text + "]" * text.count("[") + "}" * text.count("{"))
# Values shaped for particular keys: tables of "PCR" indexes, allowlist entries, hosts.
_pcr_table = st.dictionaries(
    st.one_of(_key_toml, st.text(st.sampled_from(_DIGITS), max_size=3).map(_basic_string)),
    st.one_of(_value_toml, st.just(_basic_string("ab" * 48))),
    max_size=4,
).map(_inline_table)
_allow_entry = st.fixed_dictionaries(
    {},
    optional={
        "address": st.one_of(_value_toml, _strings.map(_basic_string)),
        "port": st.one_of(_value_toml, st.integers(min_value=-1, max_value=70000).map(str)),
        "typo": _value_toml,
    },
).map(_inline_table)
_any_value = st.one_of(
    _value_toml,
    _pcr_table,
    st.lists(_allow_entry, max_size=3).map(_array),
    _deep_toml,
)


def _document(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def _table(header: str, known: list[str]) -> st.SearchStrategy[list[str]]:
    keys = st.sampled_from([*known, "typo", ""])
    body = st.dictionaries(keys, _any_value, max_size=len(known) + 1)
    return body.map(
        lambda pairs: [header, *(f"{_basic_string(key)} = {value}" for key, value in pairs.items())]
    )


def _service_documents() -> st.SearchStrategy[str]:
    sections = [_table(f"[{name}]", keys) for name, keys in _SERVICE_KEYS.items() if name]
    top = st.dictionaries(
        st.sampled_from([*_SERVICE_KEYS[""], "typo", *_SERVICE_KEYS]), _any_value, max_size=3
    ).map(lambda pairs: [f"{_basic_string(key)} = {value}" for key, value in pairs.items()])
    return st.tuples(top, st.lists(st.one_of(*sections), max_size=6, unique_by=lambda t: t[0])).map(
        lambda parts: _document([*parts[0], *(line for section in parts[1] for line in section)])
    )


def _parent_documents() -> st.SearchStrategy[str]:
    single = [_table(f"[{name}]", keys) for name, keys in _PARENT_KEYS.items() if name != "ingress"]
    ingress = _table("[[ingress]]", _PARENT_KEYS["ingress"])
    return st.tuples(
        st.lists(st.one_of(*single), max_size=3, unique_by=lambda t: t[0]),
        st.lists(ingress, max_size=3),
        st.dictionaries(st.sampled_from(["typo", "ingress", "egress"]), _any_value, max_size=1),
    ).map(
        lambda parts: _document(
            [
                *(f"{_basic_string(key)} = {value}" for key, value in parts[2].items()),
                *(line for section in parts[0] for line in section),
                *(line for section in parts[1] for line in section),
            ]
        )
    )


# TOML-looking text: fragments of the grammar and of the schema, in any order.
_toml_ish = st.lists(
    st.sampled_from(
        [
            "[",
            "]",
            "[[",
            "]]",
            "{",
            "}",
            "=",
            ",",
            ".",
            "\n",
            " ",
            "#",
            "\\",
            '"',
            "'",
            '"""',
            "'''",
            "a",
            "1",
            "-",
            "+",
            "e",
            "inf",
            "nan",
            "true",
            "1979-05-27",
            "T07:32:00",
            "Z",
            "\\u0000",
            "\\U0010ffff",
            "\\ud800",
            "²",
            "kms",
            "api",
            "nsm",
            "egress",
            "ingress",
            "listen",
            "to",
            "allow",
            "hosts",
            "simulated_pcrs",
        ]
    ),
    max_size=60,
).map("".join)

_env = st.dictionaries(
    st.sampled_from(sorted(ENV_VARS)),
    st.one_of(_strings, _strings.map(lambda s: f" {s} , {s}")),
    max_size=5,
)

# -- the checks --------------------------------------------------------------------------


def _only_config_errors(load: Callable[[], object], kind: type) -> None:
    """``load()`` returns a ``kind`` or raises ConfigError with at least one problem."""
    try:
        result = load()
    except ConfigError as exc:
        problems: tuple[str, ...] = exc.problems
    else:
        assert isinstance(result, kind)
        return
    assert problems
    assert all(p.strip() for p in problems)


def _load_service(data: bytes, env: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "serve.toml"
        path.write_bytes(data)
        _only_config_errors(lambda: load_config(path, env), ServiceConfig)


def _load_parent(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "parent.toml"
        path.write_bytes(data)
        _only_config_errors(lambda: load_parent_config(path), ParentConfig)


# (a) arbitrary bytes and text


@_fuzz(300)
@given(
    _short(
        st.one_of(st.binary(max_size=512), _toml_ish.map(str.encode), _deep_toml.map(str.encode))
    )
)
def test_service_config_arbitrary_bytes(data: bytes) -> None:
    _load_service(data, {})


@_fuzz(300)
@given(
    _short(
        st.one_of(st.binary(max_size=512), _toml_ish.map(str.encode), _deep_toml.map(str.encode))
    )
)
def test_parent_config_arbitrary_bytes(data: bytes) -> None:
    _load_parent(data)


@_fuzz(200)
@given(_short(st.one_of(st.text(max_size=200), _toml_ish, _deep_toml)))
def test_parent_config_arbitrary_text(text: str) -> None:
    """``parse_parent_config`` takes text, which may hold lone surrogates."""
    _only_config_errors(
        lambda: parse_parent_config(text, base=Path(tempfile.gettempdir())), ParentConfig
    )


# (b) every key with arbitrary values, (c) with arbitrary environment overrides


@_fuzz(500)
@given(_short(_service_documents()), _short(_env))
def test_service_config_arbitrary_values_and_environment(text: str, env: dict[str, str]) -> None:
    _load_service(text.encode(), env)


@_fuzz(300)
@given(_short(_env))
def test_service_config_arbitrary_environment_only(env: dict[str, str]) -> None:
    _only_config_errors(lambda: load_config(None, env), ServiceConfig)


@_fuzz(500)
@given(_short(_parent_documents()))
def test_parent_config_arbitrary_values(text: str) -> None:
    _load_parent(text.encode())


# The emulator's identities file (JSON or TOML): only ConfigurationError.


def _only_configuration_errors(load: Callable[[], object]) -> None:
    try:
        result = load()
    except ConfigurationError as exc:
        message = str(exc)
    else:
        assert isinstance(result, dict)
        return
    assert message


_identity = st.fixed_dictionaries(
    {},
    optional={
        name: _value_toml
        for name in (
            "access_key_id",
            "secret_access_key",
            "arn",
            "session_token",
            "principal_arn",
            "typo",
        )
    },
).map(lambda pairs: ["[[identities]]", *(f"{k} = {v}" for k, v in pairs.items())])


@_fuzz(300)
@given(
    _short(
        st.one_of(
            st.binary(max_size=300),
            _toml_ish.map(str.encode),
            _deep_toml.map(str.encode),
            st.lists(_identity, max_size=3).map(
                lambda tables: _document([line for table in tables for line in table]).encode()
            ),
        )
    ),
    st.sampled_from(["identities.toml", "identities.json"]),
)
def test_emulator_identities_file(data: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / name
        path.write_bytes(data)
        _only_configuration_errors(lambda: load_identities(path))


_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), _strings),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(_strings, inner, max_size=3)
    ),
    max_leaves=10,
)


@_fuzz(300)
@given(
    _short(
        st.one_of(
            _json_values,
            st.lists(
                st.dictionaries(
                    st.sampled_from(sorted(_IDENTITY_FIELDS)),
                    _json_values,
                ),
                max_size=3,
            ).map(lambda entries: {"identities": entries}),
        )
    )
)
def test_emulator_identities_document(document: Any) -> None:
    _only_configuration_errors(lambda: parse_identities(document))


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("identities.json", b"[" * 2000 + b"]" * 2000),  # RecursionError from json
        ("identities.json", b'{"identities": [' * 20 + b"]}" * 20),
        ("identities.toml", b"a = " + b"[" * 2000 + b"]" * 2000),  # RecursionError from tomllib
        ("identities.toml", b"a = " + b"9" * 5000),  # int()'s digit limit
    ],
    ids=["deep JSON", "JSON deeper than 8", "deep TOML", "5,000 digits"],
)
def test_emulator_identities_hostile_files(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    kind = "TOML" if name.endswith(".toml") else "JSON"
    with pytest.raises(ConfigurationError, match=f"is not valid {kind}"):
        load_identities(path)


# The emulator's settings as the CLI's flags give them, with an identities file: only
# ConfigError, listing every problem.

_floats = st.one_of(st.floats(), st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0, 30.0, 31.0]))


@_fuzz(200)
@given(
    faults=st.fixed_dictionaries(
        {
            "seed": st.integers(),
            "max_faults": st.none() | st.integers(min_value=-2, max_value=5),
            **{
                name: _floats
                for name in (
                    "latency",
                    "latency_jitter",
                    "throttle_rate",
                    "error_rate",
                    "drop_rate",
                )
            },
        }
    ),
    region=_strings,
    account=st.none() | _strings,
    port=st.integers(min_value=-1, max_value=70000),
    identities=st.none() | st.binary(max_size=200),
)
def test_emulator_settings(
    faults: dict[str, Any], region: str, account: str | None, port: int, identities: bytes | None
) -> None:
    root = TrustRoot.aws_nitro()
    with tempfile.TemporaryDirectory() as directory:
        path = None
        if identities is not None:
            path = Path(directory) / "identities.toml"
            path.write_bytes(identities)
        _only_config_errors(
            lambda: emulator_config(
                faults=faults,
                identities_file=path,
                trust_root=root,
                region=region,
                account_id=account,
                port=port,
            ),
            EmulatorConfig,
        )
