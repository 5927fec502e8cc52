"""Helpers shared by the benchmark commands."""

from __future__ import annotations

import os
import platform

import torch

__all__ = ["machine"]


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
