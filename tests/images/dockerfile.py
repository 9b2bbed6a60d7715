"""The reproducibility rules of an enclave image's Dockerfile, as a checker the tests run.

PCR0 is a hash of the image, so a Dockerfile whose inputs float (a base image by tag, the
live Debian archive, ``pip install`` of whatever is newest, build-time clocks) gives a new
PCR0 on every rebuild and voids every key policy that names the old one. The rules
(docs/reproducible-images.md):

* every ``FROM`` names its image by digest (``@sha256:...``), or an earlier stage;
* ``apt-get`` installs either from snapshot.debian.org at a fixed date (the base's own
  source list removed, no other archive named) or only ``package=version`` pins;
* every ``pip install`` is ``--require-hashes -r LOCK`` (each requirement of LOCK pinned
  with ``==`` and its sha256 hashes), or ``--no-index`` of wheel files from the context;
* the final stage declares ``ARG SOURCE_DATE_EPOCH=<seconds>`` before its first ``RUN``.

This is a reader for the Dockerfiles we write, not a full Dockerfile parser: continuation
lines, comment lines, ``ARG`` defaults and ``${NAME}`` references are understood; heredocs
and parser directives are not.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_SNAPSHOT_DATE = re.compile(r"\b\d{8}T\d{6}Z\b")
_URL = re.compile(r"\b(?:https?|ftp)://[^\s'\"]+")
_SNAPSHOT_URL = re.compile(r"^https?://snapshot\.debian\.org/archive/")
_REFERENCE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}\b")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)")
_APT = re.compile(r"\bapt(?:-get)?\s+(?:\S+\s+)*?(install|update|upgrade|dist-upgrade)\b")
_BASE_SOURCES = "/etc/apt/sources.list.d/debian.sources"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, its continuation lines joined."""

    line: int  # where it starts, 1-based
    keyword: str  # upper case
    value: str


def instructions(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile, with comment lines and line continuations removed."""
    found: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(stripped[:-1].rstrip() if continued else stripped)
        if not continued:
            keyword, _, value = " ".join(pending).partition(" ")
            found.append(Instruction(start, keyword.upper(), value.strip()))
            pending = []
    if pending:
        keyword, _, value = " ".join(pending).partition(" ")
        found.append(Instruction(start, keyword.upper(), value.strip()))
    return found


def resolve(value: str, args: dict[str, str]) -> str:
    """``${NAME}`` and ``$NAME`` replaced by the ARG defaults known (others are left)."""
    return _REFERENCE.sub(lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value)


def lock_problems(path: Path) -> list[str]:
    """Every requirement of a pip requirements file is pinned with ``==`` and hashed."""
    if not path.is_file():
        return [f"{path.name}: no such file next to the Dockerfile"]
    problems = []
    requirements = 0
    for requirement in _requirement_lines(path.read_text()):
        requirements += 1
        pin = _PIN.match(requirement)
        if pin is None:
            problems.append(f"{path.name}: {requirement.split()[0]!r} is not pinned with ==")
        elif not _HASH.search(requirement):
            problems.append(f"{path.name}: {pin.group(1)}=={pin.group(2)} has no sha256 hash")
    if requirements == 0:
        problems.append(f"{path.name}: no requirements")
    return problems


def locked_versions(path: Path) -> dict[str, str]:
    """Name (normalised) to pinned version, for each requirement of a lock file."""
    versions = {}
    for requirement in _requirement_lines(path.read_text()):
        pin = _PIN.match(requirement)
        if pin is not None:
            versions[normalise(pin.group(1))] = pin.group(2)
    return versions


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_lines(text: str) -> list[str]:
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        if pending.strip() and not pending.lstrip().startswith("-"):
            logical.append(pending.strip())
        pending = ""
    return logical


def problems(dockerfile: Path) -> list[str]:
    """Every way the Dockerfile breaks the reproducibility rules; empty when it keeps them."""
    found: list[str] = []
    steps = instructions(dockerfile.read_text())
    global_args: dict[str, str] = {}
    stages: list[list[Instruction]] = []
    stage_names: set[str] = set()
    for step in steps:
        if step.keyword == "FROM":
            stages.append([step])
        elif stages:
            stages[-1].append(step)
        elif step.keyword == "ARG":
            name, _, default = step.value.partition("=")
            global_args[name.strip()] = default.strip()
    if not stages:
        return [f"{dockerfile.name}: no FROM"]
    for stage in stages:
        found += _base_problems(stage[0], global_args, stage_names)
        found += _stage_problems(stage, dockerfile.parent)
    found += _epoch_problems(stages[-1])
    return found


def _base_problems(step: Instruction, args: dict[str, str], stages: set[str]) -> list[str]:
    words = [w for w in resolve(step.value, args).split() if not w.startswith("--")]
    image = words[0]
    if len(words) >= 3 and words[1].upper() == "AS":
        stages.add(words[2])
    if image in stages or _DIGEST.search(image):
        return []
    return [
        f"line {step.line}: FROM {image} names its base by tag, not by digest (@sha256:...): "
        "a tag moves, and PCR0 with it"
    ]


def _stage_problems(stage: list[Instruction], context: Path) -> list[str]:
    found: list[str] = []
    args: dict[str, str] = {}
    snapshot_sources = False
    for step in stage[1:]:
        if step.keyword == "ARG":
            name, _, default = step.value.partition("=")
            args[name.strip()] = default.strip()
            continue
        if step.keyword != "RUN":
            continue
        command = resolve(step.value, args)
        urls = _URL.findall(command)
        if "debian.org" in command and not all(_SNAPSHOT_URL.match(u) for u in urls):
            found.append(
                f"line {step.line}: a Debian archive other than snapshot.debian.org: "
                + ", ".join(u for u in urls if not _SNAPSHOT_URL.match(u))
            )
        elif (
            any(_SNAPSHOT_URL.match(u) for u in urls)
            and _SNAPSHOT_DATE.search(command)
            and _BASE_SOURCES in command
        ):
            snapshot_sources = True
        found += _apt_problems(step, command, snapshot_sources)
        found += _pip_problems(step, command, context)
    return found


def _commands(command: str) -> list[list[str]]:
    """The simple commands of a shell line, split at ``&&``, ``||``, ``;`` and ``|``."""
    words = shlex.split(re.sub(r"(&&|\|\||;|\|)", r" \1 ", command), posix=True)
    split: list[list[str]] = [[]]
    for word in words:
        if word in {"&&", "||", ";", "|"}:
            split.append([])
        else:
            split[-1].append(word)
    return [c for c in split if c]


def _apt_problems(step: Instruction, command: str, snapshot_sources: bool) -> list[str]:
    if not _APT.search(command) or snapshot_sources:
        return []
    found = []
    for words in _commands(command):
        if words[:1] not in (["apt-get"], ["apt"]) or "install" not in words:
            continue
        packages = [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
        unpinned = [p for p in packages if "=" not in p]
        if unpinned:
            found.append(
                f"line {step.line}: apt-get installs {', '.join(unpinned)} from the live "
                "archive: use snapshot.debian.org at a fixed date, or pin package=version"
            )
    return found


def _pip_problems(step: Instruction, command: str, context: Path) -> list[str]:
    found = []
    for words in _commands(command):
        at = _pip_install_at(words)
        if at is None:
            continue
        options = words[at + 2 :]
        if "--require-hashes" in options:
            files = [
                options[i + 1] for i, w in enumerate(options[:-1]) if w in ("-r", "--requirement")
            ]
            if not files:
                found.append(f"line {step.line}: pip install --require-hashes without -r LOCK")
            for name in files:
                found += lock_problems(context / Path(name).name)
            continue
        targets = [w for w in options if not w.startswith("-")]
        if "--no-index" in options and targets and all(t.endswith(".whl") for t in targets):
            continue
        found.append(
            f"line {step.line}: pip install {' '.join(targets) or '...'} without "
            "--require-hashes -r LOCK (or --no-index of wheels from the context)"
        )
    return found


def _pip_install_at(words: list[str]) -> int | None:
    """Where ``pip install`` starts (``pip``, ``pip3``, ``python -m pip``), if it does."""
    for i, word in enumerate(words[:-1]):
        if Path(word).name in {"pip", "pip3"} and words[i + 1] == "install":
            return i
        if word == "-m" and words[i + 1] == "pip" and words[i + 2 : i + 3] == ["install"]:
            return i + 1
    return None


def _epoch_problems(stage: list[Instruction]) -> list[str]:
    for step in stage[1:]:
        if step.keyword == "RUN":
            break
        if step.keyword == "ARG" and step.value.partition("=")[0].strip() == "SOURCE_DATE_EPOCH":
            default = step.value.partition("=")[2].strip()
            if default.isdigit():
                return []
            return [
                f"line {step.line}: ARG SOURCE_DATE_EPOCH needs a default in seconds "
                f"(got {default!r})"
            ]
    return [
        f"line {stage[0].line}: the final stage does not set ARG SOURCE_DATE_EPOCH=<seconds> "
        "before its first RUN: build steps record the time they ran"
    ]
