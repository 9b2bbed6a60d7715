"""The one configuration reader: every problem at once, typed getters that never raise."""

from __future__ import annotations

import ast
import datetime
import logging
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import attested
from attested._runtime.config import (
    MAX_SIZE,
    Override,
    Problems,
    Section,
    comma_list,
    parse,
    read_environment,
    read_file,
)
from attested.errors import ConfigError, ConfigurationError
from attested.net import parse_address

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def problems_of(problems: Problems) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        problems.raise_if_any()
    return caught.value.problems


def read(text: str, env: Mapping[str, object] | None = None) -> tuple[Section, Problems]:
    problems = Problems()
    document = parse(text, problems, name="the configuration file")
    return Section(problems, document, overrides=env), problems


# -- every problem at once, each named by its dotted key -------------------------------------


def test_every_problem_is_recorded_with_its_dotted_key() -> None:
    top, problems = read(
        """
        typo = 1
        [server]
        port = "80"
        listen = "nope"
        liste = 1
        [[forward]]
        to = "vsock:16:1"
        mode = "0777x"
        [[forward]]
        to = 5
        """
    )
    top.refuse_unknown(["server", "forward"])
    server = top.table("server")
    server.refuse_unknown(["port", "listen"])
    assert server.integer("port", 8080) == 8080
    assert server.address("listen") is None
    forwards = top.tables("forward")
    assert [forward.where for forward in forwards] == ["forward[0]", "forward[1]"]
    assert forwards[0].address("to") == parse_address("vsock:16:1")
    assert forwards[0].mode("mode", 0o600) == 0o600
    assert forwards[1].address("to") is None
    assert problems_of(problems) == (
        "typo: unknown key or section (known: server, forward)",
        "server.liste: unknown key (did you mean 'listen'?)",
        "server.port: must be an integer, not a string",
        "server.listen: 'nope': expected vsock:CID:PORT, tcp:HOST:PORT or unix:PATH",
        'forward[0].mode: must be an octal mode in a string, e.g. "0660"',
        "forward[1].to: must be a string such as 'vsock:ANY:8000'",
    )


def test_a_valid_document_reads_every_type(tmp_path: Path) -> None:
    top, problems = read(
        """
        name = "x"
        on = true
        count = 3
        ratio = 2
        names = ["a", "b"]
        mode = "0640"
        listen = "tcp:127.0.0.1:0"
        file = "~/a/b"
        choice = "two"
        """
    )
    top.base = tmp_path
    assert top.text("name", None) == "x"
    assert top.flag("on", False) is True
    assert top.integer("count", 0, minimum=1, maximum=3) == 3
    assert top.number("ratio", 0.0, minimum=0, maximum=2) == 2.0
    assert top.strings("names", ()) == ("a", "b")
    assert top.mode("mode", 0) == 0o640
    assert top.address("listen", kinds=("tcp",)) == parse_address("tcp:127.0.0.1:0")
    assert top.path("file") == Path("~/a/b").expanduser()  # absolute: base does not apply
    assert top.text("choice", "one", choices=("one", "two")) == "two"
    assert top.text("absent", None) is None
    assert top.path("absent") is None
    assert len(problems) == 0
    problems.raise_if_any()  # nothing to raise


@pytest.mark.parametrize(
    ("text", "read_it", "problem"),
    [
        ("k = 0", lambda s: s.integer("k", 1, minimum=1), "k: must be at least 1, not 0"),
        ("k = 7", lambda s: s.integer("k", 1, maximum=6), "k: must be at most 6, not 7"),
        ("k = true", lambda s: s.integer("k", 1), "k: must be an integer, not true or false"),
        ("k = 1.5", lambda s: s.integer("k", 1), "k: must be an integer, not a number"),
        (
            "k = 120",
            lambda s: s.number("k", 0.0, minimum=0.0, maximum=60.0),
            "k: must be at least 0 and at most 60, not 120",
        ),
        (
            "k = 0",
            lambda s: s.number("k", 1.0, minimum=0.0, exclusive=True),
            "k: must be more than 0, not 0",
        ),
        ("k = nan", lambda s: s.number("k", 1.0, minimum=0.0), "k: must be at least 0, not nan"),
        ("k = 'x'", lambda s: s.number("k", 1.0), "k: must be a number, not a string"),
        ("k = 1", lambda s: s.flag("k", False), "k: must be true or false"),
        ("k = ['a', 1]", lambda s: s.strings("k", ()), "k: must be a list of strings, not a list"),
        (
            "k = 'c'",
            lambda s: s.text("k", "a", choices=("a", "b")),
            "k: must be 'a' or 'b', not 'c'",
        ),
        ("k = {a = 1}", lambda s: s.text("k", ""), "k: must be a string, not a table"),
        ("k = 1979-05-27", lambda s: s.text("k", ""), "k: must be a string, not a date or time"),
        ("k = ''", lambda s: s.path("k"), "k: must be a file path"),
        (
            "k = '~no-such-user-attested/x'",
            lambda s: s.path("k"),
            "k: '~no-such-user-attested/x': cannot find the home directory",
        ),
        ("k = 'unix:/x'", lambda s: s.address("k", kinds=("tcp",)), "k: must be tcp, not unix"),
        ("", lambda s: s.address("k"), "k: required (vsock:CID:PORT, tcp:HOST:PORT or unix:PATH)"),
        ("k = 1", lambda s: s.table("k"), "k: must be a table: write [k]"),
        ("[k]", lambda s: s.tables("k"), "k: must be [[k]] tables (a list): write [[k]], not [k]"),
        ("k = 1", lambda s: s.tables("k"), "k: must be [[k]] tables (a list of tables)"),
        ("k = [1]", lambda s: s.tables("k"), "k[0]: must be a table, not an integer"),
        ("k = [{}, {}]", lambda s: s.tables("k", max_items=1), "k: at most 1 tables"),
    ],
)
def test_a_wrong_value_is_one_problem_and_the_default(text: str, read_it, problem: str) -> None:
    top, problems = read(text)
    read_it(top)
    assert problems_of(problems) == (problem,)


def test_type_problems_never_repeat_the_value() -> None:
    """A secret in the wrong place (a number where a string goes) must not reach a log."""
    top, problems = read(f'a = ["{SECRET}"]\nb = {{x = "{SECRET}"}}\nc = ["{SECRET}"]\n')
    top.text("a", None)
    top.integer("b", 0)
    top.mode("c", 0)
    assert len(problems_of(problems)) == 3
    assert SECRET not in str(problems_of(problems))


def test_odd_keys_are_quoted_on_one_line() -> None:
    top, problems = read('"a\\nb" = 1\n"c.d" = 2\n')
    top.refuse_unknown(["x"])
    assert problems_of(problems) == (
        "'a\\nb': unknown key or section (known: x)",
        "'c.d': unknown key or section (known: x)",
    )


# -- environment overrides ----------------------------------------------------------------

_OVERRIDES = (
    Override("ATTESTED_NAME", "server.name"),
    Override("ATTESTED_KEYS", "server.keys", comma_list("server.keys"), "comma-separated"),
    Override("ATTESTED_BOTH", "server", lambda text: {"server.a": text, "server.b": text}),
    Override("ATTESTED_STRICT", "server.port", lambda text: {"server.port": int(text)}),
)


def test_the_environment_replaces_the_file_and_is_checked_the_same_way() -> None:
    problems = Problems()
    env = {
        "ATTESTED_NAME": "  from-env ",
        "ATTESTED_KEYS": " a , ,b ",
        "ATTESTED_BOTH": "x",
        "ATTESTED_STRICT": "eighty",
        "UNRELATED": "1",
    }
    overrides = read_environment(_OVERRIDES, env, problems)
    assert overrides == {
        "server.name": "from-env",
        "server.keys": ["a", "b"],
        "server.a": "x",
        "server.b": "x",
    }
    document = parse('[server]\nname = "file"\nkeys = 5\n', problems, name="f")
    server = Section(problems, document, overrides=overrides).table("server")
    assert server.has("a")
    assert not server.has("c")
    assert server.text("name", None) == "from-env"
    assert server.strings("keys", ()) == ("a", "b")
    assert server.integer("a", 0) == 0  # the environment's value is checked like the file's
    assert problems_of(problems) == (
        "ATTESTED_STRICT: invalid literal for int() with base 10: 'eighty'",
        "server.keys: must be a list of strings, not an integer",  # the file's, overridden
        "server.a: must be an integer, not a string",
    )


def test_an_environment_section_needs_no_table_in_the_file() -> None:
    problems = Problems()
    overrides = read_environment(_OVERRIDES, {"ATTESTED_NAME": "n"}, problems)
    assert Section(problems, {}, overrides=overrides).table("server").text("name", "") == "n"


# -- the error, and rules that belong to other objects -------------------------------------


def test_check_keeps_the_verdict_of_the_object_that_owns_the_rule() -> None:
    problems = Problems()

    def refuses(error: Exception) -> object:
        raise error

    assert problems.check("a", lambda: 42) == 42
    assert problems.check("b", lambda: refuses(ConfigurationError("no"))) is None
    assert problems.check("c", lambda: refuses(ValueError("bad"))) is None
    assert (
        problems.check("", lambda: refuses(ConfigError(["x: 1", "y: 2"], source="f.toml"))) is None
    )
    problems.check("d", lambda: refuses(ConfigError(["z: 3"])))
    with pytest.raises(TypeError):  # a programming error is not a configuration problem
        problems.check("e", lambda: refuses(TypeError("bug")))
    assert problems_of(problems) == (
        "b: no",
        "c: bad",
        "f.toml: x: 1",
        "f.toml: y: 2",
        "d: z: 3",
    )


def test_one_error_names_the_source_and_chains_the_os_error(tmp_path: Path) -> None:
    problems = Problems()
    missing = tmp_path / "missing.toml"
    assert read_file(missing, problems, name="the configuration file") is None
    problems.add("k", "another")
    with pytest.raises(ConfigError) as caught:
        problems.raise_if_any(source=missing)
    error = caught.value
    assert error.source == str(missing)
    assert str(error) == (
        f"{missing}: cannot read the configuration file: No such file or directory; k: another"
    )
    assert isinstance(error.__cause__, FileNotFoundError)

    class Special(ConfigError):
        pass

    with pytest.raises(Special):
        problems.raise_if_any(error=Special)


# -- reading documents ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/dev/zero", "F is larger than 1 MiB"),
        ("a\x00b", "cannot read F: the path holds a NUL"),
        ("/", "cannot read F: Is a directory"),
    ],
)
def test_files_that_cannot_be_read(path: str, problem: str) -> None:
    problems = Problems()
    assert read_file(Path(path), problems, name="F") is None
    assert problems_of(problems) == (problem,)


def test_json_and_secret_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "ids.json"
    path.write_text('{"a": [1, {"b": "c"}]}')
    path.chmod(0o644)
    problems = Problems()
    with caplog.at_level(logging.WARNING, logger="attested._runtime.config"):
        assert read_file(path, problems, name="ids", json=True, secret=True) == {
            "a": [1, {"b": "c"}]
        }
    assert f"ids {path} is readable by other users (mode 0644)" in caplog.text
    path.chmod(0o600)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        read_file(path, problems, name="ids", json=True, secret=True)
    assert caplog.text == ""
    path.write_text(f'{{"a": "{SECRET}" "b"}}')
    assert read_file(path, problems, name="ids", json=True, secret=True) is None
    path.write_text(f'a = "{SECRET}" b')
    assert read_file(path, problems, name="ids", secret=True) is None
    assert problems_of(problems) == ("ids is not valid JSON", "ids is not valid TOML")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"a = ", "not valid TOML: Invalid value (at end of document)"),
        (b"\xff", "not UTF-8 (byte 0)"),
        ("a = '\ud800'", "not UTF-8 text (a lone surrogate at character 5)"),
        (b"a = " + b"[" * 100 + b"]" * 100, "not valid TOML: tables and arrays are nested more"),
        (b"#" * (MAX_SIZE + 1), "larger than 1 MiB"),
    ],
)
def test_documents_that_cannot_be_decoded(data: bytes | str, problem: str) -> None:
    problems = Problems()
    assert parse(data, problems, name="the file") is None
    (found,) = problems_of(problems)
    assert found.startswith(f"the file is {problem}")


# -- property: arbitrary documents and environments raise nothing but ConfigError ----------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["vsock:ANY:1", "tcp:127.0.0.1:0", "unix:/x", "0660", "~", "~nobody/x", "-"]),
    st.dates(),
    st.datetimes(timezones=st.none() | st.just(datetime.UTC)),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=15,
)
_KEYS = ["a", "b", "c", "x y", "\n", ""]
_documents = st.dictionaries(st.sampled_from(_KEYS), _values, max_size=6)


def _read_everything(section: Section, depth: int = 0) -> None:
    for key in _KEYS:
        section.text(key, None, choices=("a", "b") if key == "c" else ())
        section.flag(key, None)
        section.integer(key, None, minimum=0, maximum=10)
        section.number(key, None, minimum=0.0, maximum=1.0, exclusive=True)
        section.number(key, None)
        section.strings(key, None)
        section.mode(key, None)
        section.address(key, kinds=("tcp", "vsock"))
        section.path(key)
        if depth < 2:
            _read_everything(section.table(key), depth + 1)
            for item in section.tables(key, max_items=3):
                _read_everything(item, depth + 1)
    section.refuse_unknown(["a"])


@given(_documents, st.dictionaries(st.sampled_from(["a", "b", "a.a"]), _values, max_size=3))
def test_getters_never_raise_and_every_problem_names_a_key(
    document: dict[str, object], overrides: dict[str, object]
) -> None:
    problems = Problems()
    _read_everything(Section(problems, document, overrides=overrides))
    if len(problems):
        with pytest.raises(ConfigError) as caught:
            problems.raise_if_any(source="f.toml")
        found = caught.value.problems
        assert all(p and "\n" not in p and ": " in p for p in found), found
        assert str(caught.value).startswith("f.toml: ")


@given(_scalars | st.lists(_scalars, max_size=3))
def test_a_document_that_is_not_a_table_is_one_problem(document: object) -> None:
    problems = Problems()
    section = Section(problems, document)
    _read_everything(section)
    assert section.given is False
    if document is not None:
        assert problems_of(problems)[0].startswith("the document: must be a table, not ")


@given(st.binary(max_size=300) | st.text(max_size=300), st.booleans(), st.booleans())
def test_any_bytes_give_a_document_or_one_problem(
    data: bytes | str, json: bool, secret: bool
) -> None:
    problems = Problems()
    document = parse(data, problems, name="doc", json=json, secret=secret)
    if document is None:
        (problem,) = problems_of(problems)
        assert problem.startswith("doc is ")
    else:
        assert len(problems) == 0


@given(
    st.dictionaries(
        st.sampled_from(["ATTESTED_NAME", "ATTESTED_KEYS", "ATTESTED_STRICT"]), st.text()
    )
)
def test_any_environment_gives_values_or_problems(env: dict[str, str]) -> None:
    problems = Problems()
    values = read_environment(_OVERRIDES, env, problems)
    server = Section(problems, None, overrides=values).table("server")
    _read_everything(server)
    assert all(key.startswith("server.") for key in values)


# -- there is one configuration reader -----------------------------------------------------

PACKAGE = Path(attested.__file__).parent
READER = "attested._runtime.config"
LOADERS = ("attested.service._config", "attested.parent._config", "attested.emulator._config")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_one_reader_decodes_configuration() -> None:
    """Only the reader decodes TOML (through the bounded ``attested._toml``)."""
    allowed = {READER, "attested._toml"}
    decoders = {"tomllib", "attested._toml", "tomli", "toml"}
    offenders = sorted(
        _module(path)
        for path in PACKAGE.rglob("*.py")
        if _module(path) not in allowed and _imports(path) & decoders
    )
    assert offenders == []


@pytest.mark.parametrize("loader", LOADERS)
def test_the_loaders_read_through_the_reader(loader: str) -> None:
    path = PACKAGE.parent.joinpath(*loader.split(".")).with_suffix(".py")
    imports = _imports(path)
    assert READER in imports
    assert not any(name.startswith("attested._json") for name in imports)
