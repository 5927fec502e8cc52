"""The hot-reload loader process: it does not outlive a serving process that was killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from multiprocessing import resource_tracker
from pathlib import Path

import pytest

from policy_service.loader import stop_resource_tracker

ROOT = Path(__file__).resolve().parents[2]

_PARENT = """
import sys, time
from policy_service.loader import LoaderProcess
if __name__ == "__main__":
    loader = LoaderProcess()
    print(loader.start().result(timeout=120), flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


@pytest.mark.skipif(sys.platform != "linux", reason="checks processes through /proc")
def test_loader_worker_exits_when_the_server_is_killed() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        assert _alive(worker)
    finally:
        parent.send_signal(signal.SIGKILL)  # no shutdown of the pool: the worker must notice by itself
        parent.wait()
    deadline = time.monotonic() + 30
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(worker), f"loader worker {worker} outlived its killed parent"


def test_stopping_the_resource_tracker_reaps_it() -> None:
    """At shutdown the service stops multiprocessing's resource tracker and reaps it itself: left to exit
    after the service, it waits as a zombie for init, and a launcher waiting for the group waits with it."""
    resource_tracker.ensure_running()
    pid = resource_tracker._resource_tracker._pid
    assert pid is not None and _alive(pid)
    stop_resource_tracker()
    with pytest.raises(ProcessLookupError):  # reaped (not a zombie): no such process at all
        os.kill(pid, 0)
    stop_resource_tracker()  # not running: nothing to do, no error
    resource_tracker.ensure_running()  # later users of multiprocessing get a new one
    assert resource_tracker._resource_tracker._pid not in (None, pid)
