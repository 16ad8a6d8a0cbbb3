"""Every `workbench ...` command line in the README's code blocks parses with the real parser
(placeholders filled in, optional parts included), so the README cannot drift from the CLI."""

from __future__ import annotations

import functools
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
    if "--r" in argv:  # the estimate examples: the rank reached the estimate command
        assert args.command == "estimate" and args.r == int(argv[argv.index("--r") + 1])


CHEAP = {  # README command lines cheap enough to run for real, and what their output must say
    "workbench profile validate PROFILE...": "ok",
    "workbench profile list": "demo",
    "workbench estimate --model llama-3.1-8b --method qlora --r 16 --targets all-linear "
    "--batch 4 --seq 2048 --grad-ckpt --optimizer paged_adamw_8bit --precision bf16 --json": '"peak_bytes"',
    "workbench data inspect PATH [--model M] [--max-seq-len N] [--json]": '"rows"',
}


@pytest.mark.parametrize("line", list(CHEAP))
def test_cheap_readme_commands_run(line, tmp_path, monkeypatch):
    """The cheap README commands run for real, from the repository root (where the README's
    relative paths and shipped profiles are), offline."""
    import subprocess
    import sys

    assert " ".join(line.split()) in {" ".join(c.split()) for c in COMMANDS}, "not a README line"
    argv = argv_of(line)
    if argv[:1] == ["profile"] and argv[1] == "validate":
        argv = ["profile", "validate", "demo"]
    if argv[:2] == ["data", "inspect"]:
        argv[2] = "assets/demo/translate_en_fr.jsonl"
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "workbench", *argv], cwd=README.parent, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert CHEAP[line] in proc.stdout, proc.stdout[-2000:]


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command_help(line, capsys):
    """`--help` of the command each README line uses prints its usage."""
    words = argv_of(line)
    path = [w for w in words[:2] if not w.startswith("-") and w in _subcommands()]
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*path, "--help"])
    assert exc.value.code == 0
    assert "usage: workbench" in capsys.readouterr().out


@functools.lru_cache(maxsize=1)
def _subcommands() -> frozenset[str]:
    """Names of subcommands (top level and nested) the parser knows."""
    import argparse

    names: set[str] = set()
    stack = [build_parser()]
    while stack:
        parser = stack.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                names |= set(action.choices)
                stack += list(action.choices.values())
    return frozenset(names)
