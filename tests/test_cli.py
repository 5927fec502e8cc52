"""The ``mango`` entry point: how a command's exit status becomes the process's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import mango_cli

ROOT = Path(__file__).resolve().parents[1]

# A KeyboardInterrupt that passes through a nested PyRun_String (as one can during `import torch`) and is
# then caught: CPython remembers it and, without exit_process, ends the process by SIGINT anyway.
_CAUGHT_NESTED_INTERRUPT = """
import ctypes, sys
run = ctypes.pythonapi.PyRun_String
run.restype = ctypes.py_object
run.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object]
try:
    run(b"raise KeyboardInterrupt", 257, {}, {})  # 257 = Py_file_input
except KeyboardInterrupt:
    pass
"""


def _run(code: str, tmp_path: Path) -> int:
    """Exit status of ``code`` run as ``python -m`` (how the demo runs; ``-c`` exits by another path)."""
    (tmp_path / "snippet.py").write_text(code)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "snippet"], cwd=tmp_path, env=env, timeout=60).returncode


@pytest.mark.parametrize(
    ("status", "expected"), [(0, 0), (2, 2), (130, -signal.SIGINT), (143, -signal.SIGTERM)]
)
def test_exit_process_ends_interrupted_commands_by_their_signal(
    status: int, expected: int, tmp_path: Path
) -> None:
    assert _run(f"import mango_cli; mango_cli.exit_process({status})", tmp_path) == expected


def test_exit_status_no_longer_depends_on_where_the_interrupt_came(tmp_path: Path) -> None:
    # The CPython behaviour that made the demo's Ctrl-C status flaky (130 or death by SIGINT, by timing):
    assert _run(_CAUGHT_NESTED_INTERRUPT + "sys.exit(130)", tmp_path) == -signal.SIGINT
    assert _run("import sys; sys.exit(130)", tmp_path) == 130
    # exit_process gives one answer on both paths.
    tail = "import mango_cli; mango_cli.exit_process(130)"
    assert _run(_CAUGHT_NESTED_INTERRUPT + tail, tmp_path) == _run(tail, tmp_path) == -signal.SIGINT


def test_console_script_goes_through_exit_process() -> None:
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["mango"] == "mango_cli:run"


@pytest.mark.parametrize("argv", [["--runs", "0"], ["--max-delay-s", "-1"]])
def test_signal_bench_refuses_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import demo_signals

    with pytest.raises(SystemExit) as exc:
        demo_signals.main(argv)
    assert exc.value.code == 2 and "--runs must be >= 1" in capsys.readouterr().err


def _mango(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "mango_cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_version_and_subcommand_help(capsys: pytest.CaptureFixture[str]) -> None:
    version = _mango("--version")
    assert version.returncode == 0 and version.stdout.startswith("mango ")
    # the demo's help in this process (the entry point is the subprocesses' here; a subprocess of its own
    # spent ~8 s importing the demo's stack)
    with pytest.raises(SystemExit) as exc:
        mango_cli.main(["demo", "--help"])
    demo = capsys.readouterr().out
    assert exc.value.code == 0 and demo.startswith("usage: mango demo"), demo[:200]
    bench = _mango("bench", "--help")
    assert bench.returncode == 0 and "lm " in bench.stdout and "overhead" in bench.stdout
    wrong = _mango("bench", "nope")
    assert wrong.returncode == 2 and "unknown benchmark 'nope'" in wrong.stderr


def test_no_amd_smi_noise_from_the_energy_meter() -> None:
    code = "from client.telemetry import make_energy_meter; make_energy_meter('auto', 0).close()"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert "Unable to find libamd_smi.so" not in proc.stdout + proc.stderr
