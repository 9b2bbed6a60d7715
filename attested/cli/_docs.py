"""``attested docs [TOPIC]``: the guides of docs/, shipped inside the package.

The wheel carries ``docs/`` as ``attested/_docs/`` (hatchling's ``force-include`` copies
it at build time, so the shipped guides cannot drift from the checkout's); in a checkout
(an editable install) the command reads ``docs/`` itself.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import attested
from attested.cli._common import EXIT_OK, env_error, epilog, usage_error

_ADR_NAME = re.compile(r"(?:adr/)?(?P<number>\d{4})(?:-[\w.-]*)?(?:\.md)?")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``docs``."""
    docs = subparsers.add_parser(
        "docs",
        help="list the guides, or print one (they ship with the package)",
        description="Print one of the project's guides (Markdown, installed with the "
        "package), or list them. 'adr' lists the design decisions; 'adr/NNNN' (or NNNN) "
        "prints one.",
        epilog=epilog(
            ["attested docs", "attested docs service", "attested docs adr/0075"],
            ok="the guide or the list was printed",
            usage="no such guide (the message lists the guides)",
            env="the guides are not installed",
        ),
    )
    docs.add_argument(
        "topic",
        nargs="?",
        metavar="TOPIC",
        help="a guide (service, parent, emulator, ...), 'adr', or adr/NNNN; without it, "
        "the list of guides",
    )
    docs.set_defaults(handler=_run)


def guides_dir() -> Traversable:
    """Where the guides are: in the installed package, or the checkout's docs/.

    Raises:
        CliError: neither exists (exit 3).
    """
    shipped = resources.files("attested").joinpath("_docs")
    if shipped.is_dir():
        return shipped
    checkout = Path(attested.__file__).resolve().parents[1] / "docs"
    if checkout.is_dir():
        return checkout
    raise env_error("the guides are not installed with this copy of attested")


def topics(directory: Traversable) -> dict[str, Traversable]:
    """The guides by topic name (``service`` for ``service.md``), sorted."""
    found = {
        entry.name.removesuffix(".md"): entry
        for entry in directory.iterdir()
        if entry.name.endswith(".md") and entry.is_file()
    }
    return dict(sorted(found.items()))


def _adrs(directory: Traversable) -> dict[str, Traversable]:
    adr = directory.joinpath("adr")
    if not adr.is_dir():
        return {}
    return {
        entry.name[:4]: entry
        for entry in sorted(adr.iterdir(), key=lambda e: e.name)
        if entry.name[:4].isdigit() and entry.name.endswith(".md")
    }


def _title(entry: Traversable) -> str:
    for line in entry.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return ""


def _run(args: argparse.Namespace) -> int:
    directory = guides_dir()
    guides = topics(directory)
    topic: str | None = args.topic
    if topic is None:
        width = max(len(name) for name in guides)
        print("Guides (attested docs TOPIC):")
        for name, entry in guides.items():
            print(f"  {name:<{width}}  {_title(entry)}")
        print("  adr" + " " * max(width - 1, 2) + "the design decisions (attested docs adr)")
        return EXIT_OK
    name = topic.strip().lower().removesuffix(".md").removeprefix("docs/")
    if name in guides:
        sys.stdout.write(guides[name].read_text(encoding="utf-8"))
        return EXIT_OK
    adrs = _adrs(directory)
    if name in ("adr", "adrs"):
        for number, entry in adrs.items():
            print(f"  {number}  {_title(entry).split('. ', 1)[-1]}")
        return EXIT_OK
    match = _ADR_NAME.fullmatch(name)
    if match is not None and match["number"] in adrs:
        sys.stdout.write(adrs[match["number"]].read_text(encoding="utf-8"))
        return EXIT_OK
    known = ", ".join([*guides, "adr"])
    raise usage_error(f"no guide {topic!r:.60}; the guides are: {known}")
