"""Helpers shared by the benchmark commands."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

__all__ = ["BENCHMARKS_MD", "append_section", "machine"]

#: The results file every benchmark appends to (see its header for how to read it).
BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def append_section(text: str, path: Path | str = BENCHMARKS_MD) -> Path:
    """Append a markdown section (command, machine, date, table) to ``path``, creating it with a header.

    Benchmarks never rewrite the file: they only append, so a run cannot erase another one's section.
    """
    path = Path(path)
    if not path.exists() or not path.read_text().strip():
        path.write_text(
            "# MANGO benchmarks\n\nEvery figure here comes from a command in this repository; each section "
            "gives the command, the machine and the date.\n"
        )
    with path.open("a") as f:
        f.write(text if text.startswith("\n") else "\n" + text)
    return path


def machine() -> str:
    """One line describing where a benchmark ran (for BENCHMARKS.md): CPU or GPUs, versions, threads, load."""
    gpus = ""
    if torch.cuda.is_available():
        gpus = f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}, "
    return (
        f"{gpus}{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    ).replace("  ", " ")
