"""``mango bench signals``: does the demo clean up and end by its signal, whenever Ctrl-C / SIGTERM comes?

Starts ``mango demo --short`` with far more steps than it will run, waits until its policy service is ready
(``service.json`` written), sleeps a random delay in ``[0, --max-delay-s]``, sends SIGINT or SIGTERM
(alternating), and checks what a user relies on: the demo ends by that signal (``Popen.returncode == -sig``;
a shell shows 130 / 143), says the service was stopped, and the service process is gone. The slow test
``tests/test_demo.py::test_signal_stops_the_demo_and_its_service`` does this once per signal at a fixed
delay; this command covers the timings a fixed delay misses (the run, its evaluation, the service's
answers). Prints a table (one row per run) and a summary line; exits 1 if any run failed the checks.

Example::

    python -m mango_cli bench signals --runs 16 --max-delay-s 4
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import tyro

from benchmarks.common import machine_line
from policy_service.launch import pid_alive

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class SignalsArgs:
    """Does the demo clean up and end by its signal, whenever Ctrl-C / SIGTERM comes?"""

    runs: int = 16
    """demo runs, SIGINT and SIGTERM alternating"""
    max_delay_s: float = 4.0
    """largest delay after the service is ready, seconds"""
    seed: int = 1
    """seed of the random delays"""


def one_run(sig: signal.Signals, delay_s: float, out: Path, ready_timeout_s: float = 300.0) -> dict:
    """One demo run interrupted by ``sig`` ``delay_s`` after its service is ready; the checks' outcome."""
    cmd = [sys.executable, "-m", "mango_cli", "demo", "--short", "--no-progress", "--steps", "100000"]
    proc = subprocess.Popen(
        [*cmd, "--out-dir", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + ready_timeout_s
        while not (out / "service.json").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the demo's service never became ready (status {proc.poll()})")
            time.sleep(0.05)
        svc = json.loads((out / "service.json").read_text())
        was_up = pid_alive(svc["pid"])  # else "gone" below would prove nothing
        time.sleep(delay_s)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    gone = not pid_alive(svc["pid"])
    said = "the policy service was stopped" in err
    return {
        "signal": sig.name,
        "delay_s": round(delay_s, 2),
        "returncode": proc.returncode,
        "service_was_up": was_up,
        "service_gone": gone,
        "said_stopped": said,
        "ok": proc.returncode == -sig and was_up and gone and said,
        "service": svc,  # pid, port, ... as the demo wrote them
        "stderr_tail": err[-3000:],
    }


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(SignalsArgs, args=argv, prog="mango bench signals", description=SignalsArgs.__doc__)
    if args.runs < 1 or args.max_delay_s < 0:
        print("mango bench signals: error: --runs must be >= 1 and --max-delay-s >= 0", file=sys.stderr)
        raise SystemExit(2)
    rng = random.Random(args.seed)
    rows = []
    print(f"machine: {machine_line()}")
    print("| run | signal | delay_s | returncode | service gone | said stopped | ok |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            sig = signal.SIGINT if i % 2 == 0 else signal.SIGTERM
            row = one_run(sig, rng.uniform(0.0, args.max_delay_s), Path(tmp) / f"demo{i}")
            rows.append(row)
            print(
                f"| {i} | {row['signal']} | {row['delay_s']} | {row['returncode']} | {row['service_gone']} "
                f"| {row['said_stopped']} | {row['ok']} |",
                flush=True,
            )
    bad = [r for r in rows if not r["ok"]]
    print(f"{len(rows) - len(bad)} of {len(rows)} runs ended by their signal with the service stopped")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
