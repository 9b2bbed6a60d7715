"""docs/adr/README.md lists every decision record, and every link in it resolves."""

from __future__ import annotations

import re
from pathlib import Path

ADR = Path(__file__).resolve().parents[2] / "docs" / "adr"


def test_every_record_is_listed_with_its_title() -> None:
    index = (ADR / "README.md").read_text()
    for path in sorted(ADR.glob("[0-9][0-9][0-9][0-9]-*.md")):
        assert f"]({path.name})" in index, f"{path.name} is missing from docs/adr/README.md"
        title = path.read_text().splitlines()[0]
        number, _, text = title.removeprefix("# ").partition(". ")
        assert number == path.name[:4], f"{path.name}: its title says {number}"
        line = next(x for x in index.splitlines() if f"]({path.name})" in x)
        assert text.rstrip(".") in line, f"{path.name}: the index shows another title"


def test_every_link_resolves_and_numbers_are_unique() -> None:
    index = (ADR / "README.md").read_text()
    links = re.findall(r"\]\(([^)]+\.md)\)", index)
    assert links
    for link in links:
        assert (ADR / link).is_file(), link
    numbers = [p.name[:4] for p in ADR.glob("[0-9][0-9][0-9][0-9]-*.md")]
    assert len(numbers) == len(set(numbers))
