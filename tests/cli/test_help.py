"""Every ``--help``: every option explained, the exit-status table, examples that parse.

The parsers are walked from the argparse tree, so a new command or option cannot be
added without help text.
"""

from __future__ import annotations

import argparse
import shlex

import pytest

from attested.cli import build_parser, main, parsers
from attested.cli._common import EXIT_STATUSES, UsageError

ALL = {parser.prog: parser for parser in parsers(build_parser())}


def _examples(parser: argparse.ArgumentParser) -> list[str]:
    text = parser.epilog or ""
    if "examples:\n" not in text:
        return []
    block = text.split("examples:\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip()]


@pytest.mark.parametrize("prog", sorted(ALL))
def test_every_option_and_argument_has_help(prog: str) -> None:
    for action in ALL[prog]._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                assert choice.help, f"{prog} {choice.dest}: no help"
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"{prog} {name}: no help"
        assert action.help != argparse.SUPPRESS, f"{prog} {name}: hidden"


@pytest.mark.parametrize("prog", sorted(ALL))
def test_every_help_ends_with_the_exit_status_table(
    prog: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*prog.split()[1:], "--help"]) == 0
    out = capsys.readouterr().out
    table = out.split("exit status (the same for every attested command):\n", 1)[1]
    rows = [line for line in table.splitlines() if line[:5].strip().isdigit()]
    assert [row[:5] for row in rows] == [f"  {status}  " for status, _ in EXIT_STATUSES]
    for (_, meaning), row in zip(EXIT_STATUSES, rows, strict=True):
        assert row[5:].startswith(meaning), row
    if ALL[prog].get_default("handler") is not None:  # a command that runs: examples
        assert 1 <= len(_examples(ALL[prog])) <= 3, f"{prog}: one to three examples"
    assert "docs/" not in out, f"{prog}: the wheel ships no docs/; name 'attested docs TOPIC'"


@pytest.mark.parametrize("prog", sorted(ALL))
def test_examples_parse_as_written(prog: str) -> None:
    for example in _examples(ALL[prog]):
        for segment in example.split("#", 1)[0].split("|"):
            words = shlex.split(segment.replace("HEX", "5e" * 48))  # a placeholder
            if not words or words[0] != "attested":
                continue
            for redirect in ("<", ">"):
                if redirect in words:
                    words = words[: words.index(redirect)]
            try:
                build_parser().parse_args(words[1:])
            except UsageError as exc:
                pytest.fail(f"{prog}: example {example!r} does not parse: {exc}")
            except SystemExit:  # --help in an example
                pass


def test_the_epilogs_name_guides_that_exist(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["docs"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]}
    for prog, parser in ALL.items():
        for line in (parser.epilog or "").splitlines():
            if line.startswith("more: attested docs "):
                assert line.removeprefix("more: attested docs ") in listed, prog


def test_keypolicy_names_the_flag_not_the_parameter(capsys: pytest.CaptureFixture[str]) -> None:
    zero = "0=" + "00" * 48
    status = main(
        ["keypolicy", "generate", "--account", "111122223333", "--pcr", zero,
         "--enclave-role", "arn:aws:iam::111122223333:role/p",
         "--admin-role", "arn:aws:iam::111122223333:role/a"]
    )  # fmt: skip
    assert status == 2
    err = capsys.readouterr().err
    assert "--allow-debug" in err
    assert "allow_debug overrides" not in err
