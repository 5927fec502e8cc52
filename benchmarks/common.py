"""What the benchmarks share: the one BENCHMARKS.md writer (defined in :mod:`envs.benchmarks_md`, the lowest
layer whose commands write reports; re-exported here for the benchmarks)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, TypeVar

import tyro

from envs.benchmarks_md import BENCHMARKS_MD, HEADER, append_section, format_section, machine_line

__all__ = [
    "BENCHMARKS_MD",
    "HEADER",
    "append_section",
    "end_spawned_rank",
    "format_section",
    "machine_line",
    "print_report",
    "table_command",
]

A = TypeVar("A")


def print_report(prog: str, args: A, report: Callable[[A], str], problem: str = "") -> int:
    """A table command's end: ``problem`` (a precondition the arguments broke, ``""``: none) or a
    ``ValueError`` of ``report(args)`` is printed as ``prog: message`` on stderr with exit status 2; else the
    report on stdout, status 0."""
    try:
        if problem:
            raise ValueError(problem)
        print(report(args))
    except ValueError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    return 0


def table_command(
    prog: str,
    args_type: type[A],
    report: Callable[[A], str],
    argv: Sequence[str] | None,
    doc: str | None,
    problem: Callable[[A], str] | None = None,
) -> int:
    """A table command's ``main``: ``argv`` (``sys.argv[1:]`` when ``None``) parsed into ``args_type`` by
    tyro (the description: ``doc``'s first line), then :func:`print_report` with ``problem(args)``, the
    precondition the arguments broke (``""``: none)."""
    args = tyro.cli(
        args_type,
        args=list(sys.argv[1:] if argv is None else argv),
        prog=prog,
        description=(doc or "").split("\n")[0],
    )
    return print_report(prog, args, report, problem(args) if problem else "")


def end_spawned_rank() -> NoReturn:
    """End a spawned gloo rank that has written its results and destroyed its process group, without
    interpreter finalization.

    ``destroy_process_group`` drops only ``torch.distributed``'s own references: an FSDP2 model's device mesh
    can keep the gloo group alive until the interpreter tears down, and a gloo thread destroyed then aborts
    the process ("terminate called without an active exception", SIGABRT), which ``mp.spawn`` reports as a
    failed rank although every result was written. Call it on the success path only, so that an exception
    still reaches ``mp.spawn`` as the rank's error."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
