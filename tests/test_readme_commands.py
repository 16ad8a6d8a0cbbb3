"""Every `workbench ...` command line in the README's code blocks parses with the real parser
(placeholders filled in, optional parts included), so the README cannot drift from the CLI."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from workbench.cli import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"
PLACEHOLDERS = {"PROFILE...": "demo other", "PROFILE": "demo", "RUN": "run-1", "PATH": "data.jsonl",
                "OUT": "out", "FILE": "prompts.jsonl", "NAME": "tiny", "A": "a.toml", "B": "b.toml",
                "N": "3", "M": "assets/tiny-model", "F": "template.jinja", "P": "p.toml", "K": "2"}


def readme_commands() -> list[str]:
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("workbench"):
                lines.append(line)
    return lines


def argv_of(line: str) -> list[str]:
    line = re.sub(r"\[([^\]]*)\]", r"\1", line)  # optional parts: include them
    line = line.replace("--set ...", "--set train.epochs=1").replace(",...", "").replace(" ...", "")
    words = []
    for word in shlex.split(line)[1:]:
        word = word.split("|")[0]  # alternatives: the first
        words.append(PLACEHOLDERS.get(word, word))
    return " ".join(words).split()


COMMANDS = readme_commands()


def test_the_readme_has_commands():
    assert len(COMMANDS) > 15 and any("--r 16" in c for c in COMMANDS)


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command_parses(line):
    argv = argv_of(line)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse's error exit
        pytest.fail(f"README command does not parse: {line!r} -> {argv} (exit {exc.code})")
    if "--r" in argv:  # the estimate example: the rank reached the estimate command
        assert args.command == "estimate" and args.r == 16
