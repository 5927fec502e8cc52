"""What the benchmarks share: the one BENCHMARKS.md writer (defined in :mod:`envs.benchmarks_md`, the lowest
layer whose commands write reports; re-exported here for the benchmarks)."""

from __future__ import annotations

from envs.benchmarks_md import BENCHMARKS_MD, HEADER, append_section, format_section, machine_line

__all__ = ["BENCHMARKS_MD", "HEADER", "append_section", "format_section", "machine_line"]
