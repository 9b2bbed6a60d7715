"""Every fence in the project's Markdown says what it is, and what is not run still checks.

The rules are in docs/house-rules.md ("Writing docs"); test_docs_run.py runs the blocks
that are meant to run. These checks are fast: no server, no process beyond ``bash -n``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.docs.blocks import (
    CONFIGS,
    SHELLS,
    Block,
    FenceError,
    blocks,
    console_commands,
    markdown_files,
    undefined_names,
)
from tests.docs.checks import check_config, check_python, check_shell


def all_blocks() -> list[Block]:
    found: list[Block] = []
    for path in markdown_files():
        try:
            found.extend(blocks(path))
        except FenceError:
            continue  # reported by test_every_fence_says_what_it_is
    return found


def test_the_docs_are_found() -> None:
    names = {str(p.relative_to(blocks.__globals__["ROOT"])) for p in markdown_files()}
    assert {"README.md", "docs/service.md", "docs/house-rules.md"} <= names
    assert not any(name.startswith(".venv") for name in names)


def test_every_fence_says_what_it_is() -> None:
    problems = []
    for path in markdown_files():
        try:
            blocks(path)
        except FenceError as exc:
            problems.append(str(exc))
    assert not problems, "\n".join(problems)


def test_python_blocks_compile_and_define_every_name_they_use() -> None:
    problems = [p for b in all_blocks() if b.language == "python" for p in check_python(b)]
    assert not problems, "\n".join(problems)


def test_shell_blocks_are_valid_bash() -> None:
    problems = [p for b in all_blocks() if b.language in SHELLS for p in check_shell(b)]
    assert not problems, "\n".join(problems)


def test_configuration_blocks_parse_and_their_loaders_accept_them() -> None:
    problems = [p for b in all_blocks() if b.language in CONFIGS for p in check_config(b)]
    assert not problems, "\n".join(problems)


def test_most_shell_and_python_blocks_run() -> None:
    # Excerpts are for what cannot run on a laptop (inside an enclave, against real AWS);
    # if they become the rule, the docs have stopped being tested.
    code = [b for b in all_blocks() if b.language in SHELLS or b.language == "python"]
    runnable = [b for b in code if b.runnable]
    assert len(runnable) * 2 > len(code), [b.where for b in code if not b.runnable]


# --- the reader itself -------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "doc.md"
    path.write_text(text)
    return path


def test_an_untagged_fence_is_refused_naming_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "# Title\n\ntext\n\n```\nattested --help\n```\n")
    with pytest.raises(FenceError, match=r"doc\.md:5: a fence without a language"):
        blocks(path)


@pytest.mark.parametrize(
    ("info", "message"),
    [
        ("shell", "unknown fence language 'shell'"),
        ("sh parent-config", "'parent-config' is not a kind of sh block"),
        ("toml identities surplus", "unexpected words"),
        ("text excerpt", "never run"),
        ("json serve-config", r"not a kind of json block \(known: identities, key-policy\)"),
    ],
)
def test_info_strings_are_checked(tmp_path: Path, info: str, message: str) -> None:
    path = write(tmp_path, f"```{info}\nx\n```\n")
    with pytest.raises(FenceError, match=message):
        blocks(path)


def test_an_unclosed_fence_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FenceError, match=r":3: the fence is never closed"):
        blocks(write(tmp_path, "a\n\n```sh\nls\n"))


def test_blocks_keep_their_text_language_kind_and_flag(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "````text\n```sh\nnot a fence inside\n```\n````\n"
        "  ```python excerpt\n  x = 1\n    y = 2\n  ```\n"
        "~~~toml parent-config\n[logs]\n~~~\n"
        "Inline ```code``` is not a fence.\n",
    )
    found = blocks(path)
    assert [(b.line, b.language, b.kind, b.excerpt) for b in found] == [
        (1, "text", "", False),
        (6, "python", "", True),
        (10, "toml", "parent-config", False),
    ]
    assert found[0].text == "```sh\nnot a fence inside\n```\n"
    assert found[1].text == "x = 1\n  y = 2\n"
    assert not found[1].runnable
    assert found[1].where.endswith("doc.md:6")


def test_console_blocks_run_only_their_commands() -> None:
    transcript = '$ attested pcr \\\n    --string x\n{\n  "PCR": "..."\n}\n$ echo done\ndone\n'
    assert console_commands(transcript) == "attested pcr \\\n    --string x\necho done\n"


def test_undefined_names_are_found_at_every_level() -> None:
    source = (
        "import os\n"
        "from json import loads\n"
        "value = loads(os.environ['X'])\n"
        "def f(a):\n"
        "    return a + missing_in_function + value\n"
        "print([v for v in secret])\n"
        "with open('f') as handle:\n"
        "    handle.read()\n"
        "use(blob)\n"
    )
    assert undefined_names(source, "x.py") == ["blob", "missing_in_function", "secret", "use"]


def block(language: str, text: str, kind: str = "", excerpt: bool = False) -> Block:
    return Block(Path("doc.md"), 1, language, kind, excerpt, text)


@pytest.mark.parametrize(
    ("made", "problem"),
    [
        (block("toml", "[a]\nb = \n"), "not valid toml"),
        (block("json", '{"a": 1,}'), "not valid json"),
        (block("yaml", "a: [1, 2\n"), "not valid yaml"),
        (block("ini", "no section = here\n"), "not valid ini"),
        (block("toml", '[egress]\nlisen = "tcp:127.0.0.1:0"\n', "parent-config"), "lisen"),
        (block("toml", '[kms]\nallowed_key = ["*"]\n', "serve-config"), "allowed_key"),
        (block("json", '{"identities": [{"arn": "x"}]}', "identities"), "access_key_id"),
        (
            block("yaml", "allowlist:\n- {address: '*.amazonaws.com', port: 443}\n", "allowlist"),
            "refused by its loader",
        ),
        (block("json", '{"Statement": 3}', "key-policy"), "refused by its loader"),
        (
            block(
                "ini",
                "[Service]\nExecStart=/usr/bin/attested relay parent-egress \\\n"
                "    --listen vsock:ANY:8000 --no-such-flag\n",
                "systemd-unit",
            ),
            "ExecStart= does not parse",
        ),
    ],
)
def test_configuration_checks_find_what_is_wrong(made: Block, problem: str) -> None:
    (found,) = check_config(made)
    assert problem in found


def test_a_valid_unit_and_an_excerpt_pass() -> None:
    unit = (
        "[Service]\nExecStart=/usr/bin/attested relay parent-egress \\\n"
        "    --listen vsock:ANY:8000 --allowlist /etc/x.yaml\nExecReload=/bin/kill -HUP $MAINPID\n"
    )
    assert check_config(block("ini", unit, "systemd-unit")) == []
    assert check_config(block("toml", '[egress]\nlisen = ""\n', "parent-config", True)) == []


def test_excerpts_must_still_compile_and_parse() -> None:
    assert "not valid Python" in check_python(block("python", "def f(:\n", excerpt=True))[0]
    assert "uses blob" in check_python(block("python", "print(blob)\n", excerpt=True))[0]
    assert "not valid bash" in check_shell(block("sh", "if then fi\n", excerpt=True))[0]
    assert check_shell(block("console", "$ echo ok\nnot ( bash\n")) == []


def test_attested_command_lines_in_shell_blocks_must_parse() -> None:
    good = block(
        "sh", "attested relay logs --listen vsock:ANY:9000 --out -  # comment\n", excerpt=True
    )
    assert check_shell(good) == []
    bad = block(
        "sh", "attested relay logs \\\n    --listen vsock:ANY:9000 --outfile x\n", excerpt=True
    )
    assert "this CLI does not take: attested relay logs" in check_shell(bad)[0]
    skipped = block("sh", 'attested serve --config "$CONFIG" --nope\nls | attested x\n')
    assert check_shell(skipped) == []


@given(
    st.lists(
        st.one_of(
            st.sampled_from(["```", "````", "~~~", "   ```", "```sh", "```python excerpt", "$ "]),
            st.sampled_from(["text", "toml parent-config", "json", "sh nope", "```", "\\"]),
            st.text(max_size=20),
        ),
        max_size=30,
    ).map("\n".join)
)
def test_any_text_gives_blocks_or_a_fence_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "doc.md"
        path.write_text(text, encoding="utf-8")
        try:
            found = blocks(path)
        except FenceError:
            return
    for made in found:
        assert made.language
        console_commands(made.text)
