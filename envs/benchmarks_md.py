"""The one BENCHMARKS.md writer: every command that records a figure appends a dated section through it.

It lives in ``envs`` because ``mango fit --bench`` (``envs.fit``) and ``mango eval --bench``
(``agents.evaluate``) write reports too, and the import contract lets a part import only the layers below it;
``benchmarks.common`` re-exports it for the benchmarks.

A section is always the same shape, so a reader (or a script) finds the same lines in every one::

    ## <title> (<YYYY-MM-DD HH:MM> UTC)

    - command: `<the command that reproduces it>`
    - machine: <where it ran>
    - <details: one line each, optional>

    <body: the table(s) and any verdict>

The file is only ever appended to (a run cannot erase another's section) and is created with its header
when missing. This module imports nothing from the project and nothing outside the standard library (torch's
version and threads are named when torch is already loaded), so any command may use it: ``mango bench ...``,
``mango eval --bench`` and ``mango fit --bench`` alike.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["BENCHMARKS_MD", "append_section", "format_section", "machine_line"]

#: The results file every benchmark appends to (see its header for how to read it).
BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"

HEADER = (
    "# MANGO benchmarks\n\nEvery figure here comes from a command in this repository; each section gives "
    "the command, the machine and the date.\n"
)


def format_section(
    title: str,
    command: str,
    body: str,
    *,
    machine: str | None = None,
    details: Sequence[str] = (),
    when: dt.datetime | None = None,
) -> str:
    """The text of one section (see the module docstring), starting with a blank line.

    :param title: what was measured, e.g. ``"LM: AdamW vs MangoAdamW (lm-tiny, 300 steps)"``.
    :param command: the command line that reproduces the figures.
    :param body: the table(s), Markdown, and anything that reads with them (goals, verdicts).
    :param machine: where it ran; default :func:`machine_line`.
    :param details: extra bullet lines (settings, raw-result paths), without the leading ``- ``.
    :param when: the run's start; default now. Shown in UTC.
    """
    when = (when or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    lines = [
        f"\n## {title} ({when:%Y-%m-%d %H:%M} UTC)\n",
        f"- command: `{command}`",
        f"- machine: {machine if machine is not None else machine_line()}",
        *(f"- {d}" for d in details),
        "",
        body.strip("\n"),
        "",
    ]
    return "\n".join(lines)


def append_section(
    title: str,
    command: str,
    body: str,
    *,
    machine: str | None = None,
    details: Sequence[str] = (),
    when: dt.datetime | None = None,
    path: Path | str = BENCHMARKS_MD,
) -> Path:
    """Append :func:`format_section`'s section to ``path`` (created with its header); returns ``path``."""
    path = Path(path)
    text = format_section(title, command, body, machine=machine, details=details, when=when)
    if not path.exists() or not path.read_text().strip():
        path.write_text(HEADER)
    with path.open("a") as f:
        f.write(text)
    return path


def machine_line() -> str:
    """One line describing where a command ran: CPU (or GPUs), versions, threads and the load average."""
    torch = sys.modules.get("torch")  # named when loaded; this module never imports it
    gpus, versions = "", ""
    if torch is not None:
        if torch.cuda.is_available():
            gpus = f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}, "
        versions = f", torch {torch.__version__}, {torch.get_num_threads()} threads"
    cpu = " ".join(x for x in (platform.machine(), platform.processor()) if x)
    return (
        f"{gpus}{cpu} {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}{versions}, load average {os.getloadavg()[0]:.1f}"
    )
