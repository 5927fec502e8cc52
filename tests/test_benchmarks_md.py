"""The one BENCHMARKS.md writer (``benchmarks.common``): the file is created with its header, sections are
appended in order and never rewrite an earlier one, every section carries title, date, command, machine."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

from benchmarks.common import HEADER, append_section, format_section, machine_line

ROOT = Path(__file__).resolve().parent.parent


def test_section_shape() -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    text = format_section(
        "LM: AdamW vs MangoAdamW", "mango bench lm --steps 4", "| a |\n|---|\n| 1 |\n",
        machine="box", details=["raw: `results/x.json`"], when=when,
    )  # fmt: skip
    assert text.splitlines() == [
        "",
        "## LM: AdamW vs MangoAdamW (2026-01-02 01:04 UTC)",  # shown in UTC
        "",
        "- command: `mango bench lm --steps 4`",
        "- machine: box",
        "- raw: `results/x.json`",
        "",
        "| a |",
        "|---|",
        "| 1 |",
    ]


def test_append_creates_then_only_appends(tmp_path: Path) -> None:
    md = tmp_path / "BENCH.md"
    assert append_section("first", "cmd 1", "| 1 |", path=md) == md
    text = md.read_text()
    assert text.startswith(HEADER) and "## first (" in text and "- machine: " in text
    md.write_text(text + "\nhand-written note\n")
    append_section("second", "cmd 2", "| 2 |", machine="m2", path=md)
    after = md.read_text()
    assert after.startswith(text + "\nhand-written note\n")  # nothing before was rewritten
    assert re.search(
        r"## second \(\d{4}-\d\d-\d\d \d\d:\d\d UTC\)\n\n- command: `cmd 2`\n- machine: m2\n", after
    )
    assert after.index("## first") < after.index("hand-written") < after.index("## second")


def test_machine_line_names_torch_only_when_loaded() -> None:
    assert "CPUs" in machine_line() and "load average" in machine_line()
    code = "import benchmarks.common as c, sys; print(c.machine_line()); print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[1] == "False" and "torch" not in out[0]  # the writer never imports torch itself
