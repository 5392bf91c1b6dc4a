"""Every command in the fenced shell blocks of README.md and docs/*.md exists, with every flag it
uses. The console scripts of setup.cfg (also as the command of a ``docker run``), ``python -m
clipae....`` and ``torchrun ... -m clipae....`` lines are checked against their own ``--help`` (a
subcommand's, such as ``clipae-bench utal``), called in-process through the entry-point functions."""
from __future__ import annotations

import functools
import importlib
import importlib.util
import io
import re
import shlex
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from test_console_errors import console_scripts, entry_point

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_INFO = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", re.S | re.M)
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SEPARATORS = {"&&", "||", ";", "|"}
README_MAX_LINES = 250


def shell_blocks(text: str) -> list[tuple[int, str]]:
    """The fenced blocks of a Markdown text whose info string names a shell: (first line, body)."""
    blocks = []
    for match in FENCE.finditer(text):
        info = match.group(1).strip().split()
        if info and info[0].lower() in SHELL_INFO:
            blocks.append((text.count("\n", 0, match.start(2)) + 1, match.group(2)))
    return blocks


def command_lines(body: str) -> list[tuple[int, list[str]]]:
    """One shell block -> (line offset, tokens) per simple command: continuations joined, comments
    dropped, leading ``VAR=value`` assignments removed, ``&&``/``;``/``|`` split."""
    commands, pending, start = [], "", 0
    for number, line in enumerate(body.splitlines()):
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        tokens, current = shlex.split(pending + line, comments=True), []
        pending = ""
        for token in tokens + [";"]:
            if token in SEPARATORS:
                while current and ASSIGNMENT.match(current[0]):
                    current.pop(0)
                if current:
                    commands.append((start, current))
                current = []
            else:
                current.append(token)
    return commands


def resolve(tokens: list[str]) -> tuple[str, str, list[str]] | None:
    """tokens -> (script name, ``module:function`` of its entry point, its arguments), or None
    for a command that is not clipae's (``make``, ``docker build``, ``python -c``, ...); a
    ``docker run`` line is checked for the clipae command it runs in the image."""
    first = tokens[0]
    if first == "docker" and tokens[1:2] == ["run"]:  # the command after the image
        at = next((i for i, t in enumerate(tokens) if t.startswith("clipae-")), None)
        return resolve(tokens[at:]) if at is not None else None
    if first.startswith("clipae-"):
        return first, console_scripts().get(first, ""), tokens[1:]
    module_at = None
    if first in ("python", "python3") and tokens[1:2] == ["-m"]:
        module_at = 2
    elif first == "torchrun" and "-m" in tokens:
        module_at = tokens.index("-m") + 1
    if module_at is not None and tokens[module_at:module_at + 1] == ["clipae"] and len(tokens) > module_at + 1:
        script = f"clipae-{tokens[module_at + 1]}"          # python -m clipae COMMAND: the console script
        return script, console_scripts().get(script, ""), tokens[module_at + 2:]
    if module_at is not None and module_at < len(tokens) and tokens[module_at].startswith("clipae."):
        module = tokens[module_at]
        return f"python -m {module}", f"{module}:main", tokens[module_at + 1:]
    return None


def flags(args: list[str]) -> list[str]:
    """The options a command line uses: ``--name`` (from ``--name=value`` too) and ``-x``; the
    ``[...]`` of an optional part in the docs is not part of the name."""
    found = []
    for arg in args:
        arg = arg.strip("[]()")
        if re.fullmatch(r"--[A-Za-z0-9][A-Za-z0-9_-]*(=.*)?", arg, re.S):
            found.append(arg.split("=", 1)[0])
        elif re.fullmatch(r"-[A-Za-z]", arg):
            found.append(arg)
    return found


@functools.cache
def help_text(target: str, prefix: tuple[str, ...]) -> tuple[int, str]:
    """(exit status, stdout + stderr) of ``main([*prefix, "--help"])``, run in this process."""
    main = entry_point(target)
    captured = io.StringIO()
    with redirect_stdout(captured), redirect_stderr(captured):
        try:
            status = main([*prefix, "--help"])
        except SystemExit as e:
            status = e.code
    return int(status or 0), captured.getvalue()


def command_help(target: str, args: list[str]) -> tuple[str, str]:
    """(the help that governs ``args``, how it was asked for): a subcommand's own help when the
    first argument names one (its help differs from the command's own, or the command has none)."""
    status, text = help_text(target, ())
    if args and not args[0].startswith("-"):
        sub_status, sub_text = help_text(target, (args[0],))
        if sub_status == 0 and (status != 0 or sub_text != text):
            return sub_text, f"{args[0]} --help"
    assert status == 0, f"--help exits with {status}:\n{text}"
    return text, "--help"


def uses_flag(help_: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_) is not None


def documented_commands() -> list[tuple[str, list[str]]]:
    """(``file:line``, tokens) of every clipae command in the fenced shell blocks of the docs."""
    found = []
    for path in DOC_FILES:
        text = path.read_text(encoding="utf-8")
        for block_line, body in shell_blocks(text):
            for offset, tokens in command_lines(body):
                if resolve(tokens) is not None:
                    found.append((f"{path.relative_to(ROOT)}:{block_line + offset}", tokens))
    return found


COMMANDS = documented_commands()


@pytest.mark.parametrize("where,tokens", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_documented_command_exists_with_its_flags(where, tokens):
    name, target, args = resolve(tokens)
    assert target, f"{where}: {name} is not a console script of setup.cfg"
    module, _, function = target.partition(":")
    assert importlib.util.find_spec(module) is not None, f"{where}: {name}: no module {module}"
    assert callable(getattr(importlib.import_module(module), function, None)), f"{where}: {name}: {target} is missing"
    help_, asked = command_help(target, args)
    stale = [flag for flag in flags(args) if not uses_flag(help_, flag)]
    assert not stale, f"{where}: {name} {asked} does not list {', '.join(stale)}"


def test_every_console_script_is_documented_in_a_shell_block():
    documented = {resolve(tokens)[0] for _, tokens in COMMANDS}
    missing = sorted(set(console_scripts()) - documented)
    assert not missing, f"no fenced shell block runs {missing}"


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES})"


def test_the_checker_finds_a_stale_flag_an_unknown_script_and_a_subcommand():
    body = ("OMP_NUM_THREADS=1 clipae-bench utal --split validation \\\n    --no-such-flag   # a comment --not-a-flag\n"
            "clipae-nothing --x\nmake demo && clipae-eval [--subset test] [--strict-ids]\n")
    commands = command_lines(body)
    assert [tokens for _, tokens in commands] == [
        ["clipae-bench", "utal", "--split", "validation", "--no-such-flag"],
        ["clipae-nothing", "--x"], ["make", "demo"], ["clipae-eval", "[--subset", "test]", "[--strict-ids]"]]
    name, target, args = resolve(commands[0][1])
    help_, asked = command_help(target, args)
    assert asked == "utal --help"
    assert [f for f in flags(args) if not uses_flag(help_, f)] == ["--no-such-flag"]
    assert resolve(commands[1][1])[1] == ""  # not in setup.cfg
    assert resolve(commands[2][1]) is None
    eval_help, _ = command_help(*resolve(commands[3][1])[1:])
    assert flags(commands[3][1][1:]) == ["--subset", "--strict-ids"]
    assert all(uses_flag(eval_help, f) for f in ["--subset", "--strict-ids"])
    missing = resolve(["python", "-m", "clipae.pipeline.no_such_module", "--x"])
    assert missing[1] == "clipae.pipeline.no_such_module:main"
    assert importlib.util.find_spec("clipae.pipeline.no_such_module") is None
    docker = shlex.split("docker run --gpus all -v /d:/out clipae clipae-train --manifest /out/m.jsonl")
    assert resolve(docker)[0::2] == ("clipae-train", ["--manifest", "/out/m.jsonl"])
    torchrun = ["torchrun", "--nproc_per_node=4", "-m", "clipae", "train", "--manifest", "m"]
    assert resolve(torchrun) == ("clipae-train", "clipae.cli:train_main", ["--manifest", "m"])
