"""The one configuration reader: a bounded document, ``ATTESTED_*`` overrides, every problem.

Every configuration file this project reads (``attested serve``, ``attested parent``, the
KMS emulator's identities) goes through here, so each behaves the same: :func:`read_file`
or :func:`parse` decodes one document, :class:`Section` walks it with typed getters that
never raise, :class:`Override` lays ``ATTESTED_*`` variables over it, and
:class:`Problems` collects every problem into one :class:`~attested.errors.ConfigError`.
See ``docs/adr/0071-one-config-reader.md``.

Boundaries: no schema here (keys, defaults and rules across keys belong to the loaders in
``attested.service``, ``attested.parent`` and ``attested.emulator``). Type problems name
the type, never the value, so a secret in the wrong place does not reach a log.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from attested import _json, _toml
from attested.errors import ConfigError, ConfigurationError, MalformedError
from attested.net import Address, parse_address

__all__ = [
    "MAX_SIZE",
    "Override",
    "Problems",
    "Section",
    "is_http_url",
    "parse",
    "read_environment",
    "read_file",
]

logger = logging.getLogger(__name__)

MAX_SIZE = 1024 * 1024
"""A configuration document larger than this (1 MiB) is refused unread."""

_T = TypeVar("_T")
_D = TypeVar("_D")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
_OCTAL_MODE = re.compile(r"[0-7]{1,4}")  # ASCII only: int("٠٦٦٠", 8) is 0o660


class Problems:
    """Every problem found so far, each ``"dotted.key: message"``.

    Attributes:
        cause: the ``OSError`` that kept the file from being read, chained to the error.
    """

    def __init__(self) -> None:
        self._items: list[str] = []
        self.cause: OSError | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, key: str, message: str) -> None:
        """Record one problem about ``key`` (``""``: about the document as a whole)."""
        self._items.append(f"{key}: {message}" if key else message)

    def check(self, key: str, make: Callable[[], _T]) -> _T | None:
        """``make()``; or ``None``, with what it refused as problems of ``key``.

        ``make`` builds the library object that owns a rule (or calls its validator); its
        verdict is a :class:`ConfigError`'s problems (after its source, if it names one),
        or a ``ConfigurationError``'s or ``ValueError``'s message.
        """
        try:
            return make()
        except ConfigError as exc:
            for problem in exc.problems:
                self.add(key, f"{exc.source}: {problem}" if exc.source else problem)
        except (ConfigurationError, ValueError) as exc:
            self.add(key, str(exc))
        return None

    def raise_if_any(
        self, *, source: str | Path | None = None, error: type[ConfigError] = ConfigError
    ) -> None:
        """Raise one ``error`` listing every problem (``source``: the file they are in)."""
        if self._items:
            where = None if source is None else str(source)
            raise error(self._items, source=where) from self.cause


def read_file(
    path: Path, problems: Problems, *, name: str, json: bool = False, secret: bool = False
) -> object:
    """Read (at most :data:`MAX_SIZE`, it may be /dev/zero) and decode; ``None`` on failure.

    ``name`` is the file in messages (``"the configuration file"`` when the error names the
    path as its source). A ``secret`` file (it holds secrets) draws a warning when others
    may read it, and no detail of what is wrong inside.
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SIZE + 1)
            mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
    except OSError as exc:
        problems.add("", f"cannot read {name}: {exc.strerror or exc}")
        problems.cause = exc
        return None
    except ValueError:  # a NUL in the path
        problems.add("", f"cannot read {name}: the path holds a NUL")
        return None
    if secret and mode & 0o077:
        logger.warning("%s %s is readable by other users (mode %04o)", name, path, mode)
    return parse(data, problems, name=name, json=json, secret=secret)


def parse(
    data: bytes | str, problems: Problems, *, name: str, json: bool = False, secret: bool = False
) -> object:
    """Decode one document given as bytes or text; ``None`` if that fails.

    Size, nesting and integers are bounded; messages never repeat the input, and for JSON
    or a ``secret`` file they give no detail.
    """
    try:
        if len(data) > MAX_SIZE:
            raise MalformedError("larger than 1 MiB")
        if not json:
            return _toml.loads(data, max_size=MAX_SIZE)
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        return _json.loads(raw, what="JSON", max_size=MAX_SIZE, max_depth=_toml.MAX_DEPTH)
    except MalformedError as exc:
        kind = "JSON" if json else "TOML"
        plain = (json or secret) and not str(exc).startswith("larger")
        problems.add("", f"{name} is not valid {kind}" if plain else f"{name} is {exc}")
        return None


@dataclass(frozen=True, slots=True)
class Override:
    """One ``ATTESTED_*`` variable, the dotted key it overrides, and how it is written.

    ``parse`` turns its text into ``{dotted key: value}`` (or raises ``ValueError`` with the
    problem); without it, the text, stripped, is the value of ``key``.
    """

    variable: str
    key: str
    parse: Callable[[str], Mapping[str, object]] | None = None
    note: str = ""


def comma_list(key: str) -> Callable[[str], Mapping[str, object]]:
    """An :attr:`Override.parse` for a comma-separated list of strings (blanks dropped)."""
    return lambda text: {key: [item.strip() for item in text.split(",") if item.strip()]}


def read_environment(
    overrides: Iterable[Override], env: Mapping[str, str], problems: Problems
) -> dict[str, object]:
    """``{dotted key: value}`` from the variables of ``overrides`` that ``env`` sets."""
    values: dict[str, object] = {}
    for item in overrides:
        if item.variable in env:
            text = env[item.variable]
            try:
                values.update(item.parse(text) if item.parse else {item.key: text.strip()})
            except ValueError as exc:
                problems.add(item.variable, str(exc))
    return values


class Section:
    """One table (``where`` is its dotted path, ``""`` for the document), read key by key.

    Getters return ``default`` when the key is absent or its value is wrong (a problem). A
    value from the environment (``overrides``, from :func:`read_environment`) replaces the
    file's; both are checked. Relative paths are taken from ``base``.
    """

    def __init__(
        self,
        problems: Problems,
        table: object,
        *,
        where: str = "",
        overrides: Mapping[str, object] | None = None,
        base: Path | None = None,
    ) -> None:
        if table is not None and not isinstance(table, Mapping):
            problems.add(where or "the document", f"must be a table, not {_kind(table)}")
        self.problems = problems
        self.where = where
        self.base = base or Path()
        self.given = isinstance(table, Mapping)
        """Whether the document has this table."""
        self._table: Mapping[str, object] = table if isinstance(table, Mapping) else {}
        self._overrides = overrides or {}

    def key(self, key: str) -> str:
        """The dotted path of ``key`` (quoted unless it is a plain name)."""
        shown = key if _BARE_KEY.fullmatch(key) else f"{key!r:.80}"
        return f"{self.where}.{shown}" if self.where else shown

    def problem(self, key: str | None, message: str) -> None:
        """Record a problem about ``key`` (``None``: about this table)."""
        self.problems.add(self.where if key is None else self.key(key), message)

    def has(self, key: str) -> bool:
        """Whether the file or the environment gives ``key``."""
        return key in self._table or self.key(key) in self._overrides

    def get(self, key: str, default: object = None) -> object:
        """The value of ``key``, the environment's if it gives one; unchecked."""
        return self._overrides.get(self.key(key), self._table.get(key, default))

    def refuse_unknown(self, known: Iterable[str]) -> None:
        """Make every key not in ``known`` a problem, suggesting a close match."""
        names = list(known)
        what = "unknown key" if self.where else "unknown key or section"
        for key in self._table:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(names)
                self.problem(key, f"{what} ({hint})")

    def read(self, key: str, default: _D, convert: Callable[[object], _T]) -> _T | _D:
        """``convert`` of the file's value, then of the environment's (which wins).

        ``convert`` raises ``ValueError`` with the problem for a value it refuses.
        """
        result: _T | _D = default
        given = [self._table[key]] if key in self._table else []
        if self.key(key) in self._overrides:
            given.append(self._overrides[self.key(key)])
        for value in given:
            try:
                result = convert(value)
            except ValueError as exc:
                self.problem(key, str(exc))
        return result

    def text(self, key: str, default: _D, *, choices: tuple[str, ...] = ()) -> str | _D:
        """A string; one of ``choices`` if given."""

        def convert(value: object) -> str:
            text = _typed(value, str, "a string")
            if choices and text not in choices:
                *most, last = [repr(choice) for choice in choices]
                either = f"{', '.join(most)} or {last}" if most else last
                raise ValueError(f"must be {either}, not {text!r:.40}")
            return text

        return self.read(key, default, convert)

    def flag(self, key: str, default: _D) -> bool | _D:
        """``true`` or ``false``."""

        def convert(value: object) -> bool:
            if isinstance(value, bool):
                return value
            raise ValueError("must be true or false")

        return self.read(key, default, convert)

    def integer(
        self, key: str, default: _D, *, minimum: int | None = None, maximum: int | None = None
    ) -> int | _D:
        """An integer (not a boolean) within the bounds."""

        def convert(value: object) -> int:
            number = _typed(value, int, "an integer")
            _bounded(number, minimum, maximum, exclusive=False)
            return number

        return self.read(key, default, convert)

    def number(
        self,
        key: str,
        default: _D,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive: bool = False,
    ) -> float | _D:
        """A number (integer or float) within the bounds (``exclusive``: above minimum)."""

        def convert(value: object) -> float:
            if isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            number = _typed(value, float, "a number")
            if minimum is not None or maximum is not None:  # else infinities are left to judge
                _bounded(number, minimum, maximum, exclusive=exclusive)
            return number

        return self.read(key, default, convert)

    def strings(self, key: str, default: _D) -> tuple[str, ...] | _D:
        """A list of strings."""

        def convert(value: object) -> tuple[str, ...]:
            if isinstance(value, list) and all(isinstance(item, str) for item in value):
                return tuple(value)
            raise ValueError(f"must be a list of strings, not {_kind(value)}")

        return self.read(key, default, convert)

    def mode(self, key: str, default: _D) -> int | _D:
        """A file mode: octal digits in a string (``"0660"``)."""

        def convert(value: object) -> int:
            if isinstance(value, str) and _OCTAL_MODE.fullmatch(value):
                return int(value, 8)
            raise ValueError('must be an octal mode in a string, e.g. "0660"')

        return self.read(key, default, convert)

    def address(
        self, key: str, *, kinds: tuple[str, ...] = ("vsock", "tcp", "unix")
    ) -> Address | None:
        """A required ``vsock:``, ``tcp:`` or ``unix:`` address, of one of ``kinds``."""

        def convert(value: object) -> Address:
            if not isinstance(value, str):
                raise ValueError("must be a string such as 'vsock:ANY:8000'")
            address = parse_address(value)
            if address.kind not in kinds:
                raise ValueError(f"must be {' or '.join(kinds)}, not {address.kind}")
            return address

        if not self.has(key):
            self.problem(key, "required (vsock:CID:PORT, tcp:HOST:PORT or unix:PATH)")
        return self.read(key, None, convert)

    def path(self, key: str) -> Path | None:
        """A file path, relative to :attr:`base`, ``~`` expanded."""

        def convert(value: object) -> Path:
            if not isinstance(value, str) or not value or "\x00" in value:
                raise ValueError("must be a file path")
            try:
                return self.base / Path(value).expanduser()
            except RuntimeError:  # ~user with no such user, or ~ with no home directory
                raise ValueError(f"{value!r:.80}: cannot find the home directory") from None

        return self.read(key, None, convert)

    def table(self, key: str) -> Section:
        """The table ``key``: empty if absent, and a problem if not a table."""
        value = self._table.get(key)
        if value is not None and not isinstance(value, Mapping):
            self.problem(key, f"must be a table: write [{self.key(key)}]")
            value = None
        return Section(
            self.problems, value, where=self.key(key), overrides=self._overrides, base=self.base
        )

    def tables(self, key: str, *, max_items: int | None = None) -> list[Section]:
        """The array of tables ``key`` (``[[key]]``), each named ``key[N]``."""
        value, name = self._table.get(key, []), self.key(key)
        if isinstance(value, Mapping):
            self.problem(key, f"must be [[{name}]] tables (a list): write [[{name}]], not [{name}]")
        elif not isinstance(value, list):
            self.problem(key, f"must be [[{name}]] tables (a list of tables)")
        elif max_items is not None and len(value) > max_items:
            self.problem(key, f"at most {max_items} tables")
        else:
            items = [
                Section(self.problems, item, where=f"{name}[{index}]", base=self.base)
                for index, item in enumerate(value)
            ]
            return [item for item in items if item.given]
        return []


def is_http_url(value: object) -> bool:
    """Whether ``value`` is an ``http://HOST[:PORT]/...`` URL (checked, never raising)."""
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:  # a bad bracketed host (http://[::1) or port
        return False
    return parts.scheme == "http" and bool(parts.hostname)


def _typed(value: object, kind: type[_T], what: str) -> _T:
    """``value`` if it is a ``kind`` (a boolean is not a number), else ``ValueError``."""
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise ValueError(f"must be {what}, not {_kind(value)}")


def _bounded(
    value: float, minimum: float | None, maximum: float | None, *, exclusive: bool
) -> None:
    low = minimum is None or (value > minimum if exclusive else value >= minimum)
    if low and (maximum is None or value <= maximum) and math.isfinite(value):
        return
    bounds = (
        [] if minimum is None else [f"{'more than' if exclusive else 'at least'} {_g(minimum)}"]
    )
    bounds += [] if maximum is None else [f"at most {_g(maximum)}"]
    raise ValueError(f"must be {' and '.join(bounds) or 'finite'}, not {_g(value)}")


def _g(number: float) -> str:
    return str(number) if isinstance(number, int) else f"{number:g}"


def _kind(value: object) -> str:
    """What ``value`` is, in TOML's words; never the value itself (it may be a secret)."""
    kinds = [(bool, "true or false"), (int, "an integer"), (float, "a number"), (str, "a string")]
    kinds += [(list, "a list"), (Mapping, "a table"), (type(None), "null")]
    return next((name for kind, name in kinds if isinstance(value, kind)), "a date or time")
