"""`mango` command line: one entry point, subcommands implemented in the packages.

Each subcommand is a ``main(argv: list[str]) -> int`` function imported lazily, so ``mango serve`` does not
import SB3 and ``mango train`` does not import FastAPI. This module only routes on the first word; every
command parses its own flags the same way: a dataclass of arguments with a docstring per field, read by
``tyro.cli(Args, args=argv, prog="mango <command>")`` (``--help`` shows the docstrings and defaults, bools
take ``--flag`` / ``--no-flag``, tuples take space-separated values). Nothing imports this module back.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import signal
import sys
from typing import NoReturn

#: the distribution's name on PyPI (pyproject's ``project.name``; the import packages keep their own names)
DISTRIBUTION = "mango-compress"

#: subcommand -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": ("policy_service.cli", "main", "run the policy service (uvicorn)"),
    "demo": ("demo.app", "main", "the main job: service + adaptive training + report"),
    "verdict": ("demo.pool", "main", "one verdict over the seeds of several demos' summary.json"),
    "train": ("agents.train", "main", "train a PPO + TinyFormer policy"),
    "eval": ("agents.evaluate", "main", "evaluate controllers on held-out workloads"),
    "record": ("envs.record", "main", "record traces from the training backend"),
    "fit": ("envs.fit", "main", "fit the surrogate on traces and report its error"),
    "profile": ("envs.hardware", "main", "measure each setting's step time/energy on this machine"),
    "bench": ("benchmarks.cli", "main", "benchmarks (`mango bench` lists them)"),
}


def _version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never pip-installed
        return "unknown (not installed: pip install -e .)"


def _usage() -> str:
    lines = ["usage: mango [--version] <command> [args...]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"mango {_version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"mango: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            print(f"mango {name}: not yet available ({module} is not built yet)")
            return 0 if name == "demo" else 2
        raise
    return int(getattr(mod, func)(rest) or 0)


#: exit statuses that mean "stopped by this signal, after cleaning up" (128 + the signal's number)
SIGNAL_STATUSES: dict[int, signal.Signals] = {128 + s: s for s in (signal.SIGINT, signal.SIGTERM)}


def exit_process(status: int) -> NoReturn:
    """End the process with ``status``; 130 / 143 (a command that cleaned up after SIGINT / SIGTERM) end it
    by re-raising that signal with its default action, the Unix convention for an interrupted program.

    A shell still sees 130 / 143, ``make`` and other callers learn that the job was interrupted (not that it
    failed), and the status no longer depends on CPython's shutdown: CPython exits by SIGINT on its own when
    a ``KeyboardInterrupt`` went through a nested ``PyRun_String`` (``import torch`` does that), even if the
    command caught it later, so ``sys.exit(130)`` gave 130 or death-by-SIGINT depending on when Ctrl-C came.
    """
    sig = SIGNAL_STATUSES.get(status)
    if sig is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(sig, signal.SIG_DFL)
        signal.raise_signal(sig)  # delivered to this thread before raise_signal returns
    sys.exit(status)


def run() -> NoReturn:
    """The ``mango`` console script: :func:`main` on ``sys.argv``, ended by :func:`exit_process`."""
    exit_process(main())


if __name__ == "__main__":
    run()
