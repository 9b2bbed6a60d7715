"""stop_all: every part at once, one shared deadline, a broken part does not stop the rest."""

from __future__ import annotations

import threading

import pytest

from attested._runtime.lifecycle import stop_all


class Part:
    def __init__(self, seconds: float, *, clean: bool = True, fails: bool = False) -> None:
        self.seconds = seconds
        self.clean = clean
        self.fails = fails
        self.given: float | None = None
        self.started = threading.Event()
        self.others: list[Part] = []
        self.saw_others_started = False

    def stop(self, deadline: float = 10.0) -> bool:
        self.given = deadline
        self.started.set()
        if self.fails:
            raise RuntimeError("broken")
        # In parallel, every other part's stop() has begun before this one returns.
        self.saw_others_started = all(o.started.wait(self.seconds) for o in self.others)
        return self.clean


def test_parts_stop_at_once_within_one_deadline() -> None:
    parts = {"a": Part(30.0), "b": Part(30.0), "c": Part(30.0)}
    for part in parts.values():
        part.others = [p for p in parts.values() if p is not part]
    assert stop_all(parts, deadline=60.0)
    assert all(p.saw_others_started for p in parts.values())  # one after another: never
    assert all(p.given is not None and 0 < p.given <= 60.0 for p in parts.values())


@pytest.mark.parametrize(
    "parts",
    [
        {"clean": Part(0.0), "unclean": Part(0.0, clean=False)},
        {"clean": Part(0.0), "broken": Part(0.0, fails=True)},
    ],
    ids=["unclean", "raises"],
)
def test_one_bad_part_makes_the_result_false_and_the_others_still_stop(parts, caplog) -> None:
    assert not stop_all(parts, deadline=1.0)
    assert all(p.given is not None for p in parts.values())


def test_no_parts_is_clean_and_stopping_twice_is_harmless() -> None:
    assert stop_all({}, deadline=1.0)
    part = Part(0.0)
    assert stop_all({"p": part}, deadline=1.0)
    assert stop_all({"p": part}, deadline=1.0)
    assert threading.active_count() >= 1
