"""Every ``mango`` command line the docs show parses with its command's arguments (tyro), without running it.

The commands moved from hand-written parsers to tyro, which spells some things differently (lists are
space-separated, an empty optional value is ``None``, not ``none``); a documented command that no longer
parses is a broken promise. Sources: README, docs/, deploy/README.md, the Makefile and the module docstrings
of every command module.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import tyro

from benchmarks.cli import BENCHES
from mango_cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
#: A command line: ``mango <command> ...`` or ``[python] -m mango_cli <command> ...`` up to the end of a code
#: span, a comment, a pipe or a shell separator.
_COMMAND = re.compile(r"(?:\bmango|-m mango_cli)[ \t]+([a-z]+)([^`#|;&\n]*)")


def _modules() -> list[str]:
    names = {module for module, _, _ in COMMANDS.values()} | {module for module, _ in BENCHES.values()}
    return sorted(n for n in names if n not in ("benchmarks.cli",))


def _texts() -> list[tuple[str, str]]:
    files = [
        ROOT / "README.md",
        ROOT / "Makefile",
        ROOT / "deploy" / "README.md",
        *(ROOT / "docs").glob("*.md"),
    ]
    out = [(str(f.relative_to(ROOT)), f.read_text()) for f in files]
    for name in _modules():
        out.append((name, importlib.import_module(name).__doc__ or ""))
    return out


def _documented() -> list[tuple[str, str, list[str]]]:
    """(where, module, argv) of every documented command line."""
    found = []
    for where, text in _texts():
        for match in _COMMAND.finditer(text.replace("\\\n", " ")):
            command, rest = match.group(1), match.group(2).strip()
            if (
                command not in COMMANDS
                or re.match(r"[^\w-]", rest)
                or any(c in rest for c in ("<", "...", "$"))
            ):
                continue  # prose ("mango train / eval"), a placeholder or a shell variable
            argv = shlex.split(rest)
            module = COMMANDS[command][0]
            if command == "bench":
                if not argv or argv[0] not in BENCHES:
                    continue
                module, argv = BENCHES[argv[0]][0], argv[1:]
            found.append((where, module, argv))
    return found


def _args_class(module_name: str) -> Any:
    """The dataclass a command module hands to ``tyro.cli`` (directly, or through
    ``benchmarks.common.table_command``)."""
    module = importlib.import_module(module_name)
    source = Path(module.__file__ or "").read_text()
    match = re.search(r"tyro\.cli\(\s*(\w+)", source)
    match = match or re.search(r'table_command\(\s*"[^"]*",\s*(\w+)', source)
    assert match, f"{module_name} does not parse its arguments with tyro.cli"
    return getattr(module, match.group(1))


DOCUMENTED = _documented()


def test_the_docs_show_commands() -> None:
    assert len(DOCUMENTED) > 20 and {m for _, m, _ in DOCUMENTED} >= {"demo.app", "benchmarks.service"}


@pytest.mark.parametrize(
    ("where", "module", "argv"), DOCUMENTED, ids=[f"{w}:{' '.join(a)}" for w, _, a in DOCUMENTED]
)
def test_documented_command_parses(where: str, module: str, argv: list[str]) -> None:
    cls = _args_class(module)
    try:
        tyro.cli(cls, args=argv)
    except SystemExit as exc:  # --help exits 0 after printing
        if exc.code not in (0, None):
            pytest.fail(f"{where}: `{' '.join(argv)}` does not parse for {module} (exit {exc.code})")
