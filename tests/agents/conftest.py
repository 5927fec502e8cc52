"""One tiny PPO run shared by the agents tests (a few hundred steps: seconds, not minutes)."""

from __future__ import annotations

from pathlib import Path

import pytest

#: The smoke run's command-line arguments (``mango train ...``); small enough for the test suite.
SMOKE_ARGV = [
    "--total-timesteps", "256",
    "--n-envs", "8",
    "--n-steps", "16",
    "--batch", "64",
    "--n-epochs", "1",
    "--d-model", "16",
    "--n-layers", "1",
    "--n-heads", "2",
    "--eval-every", "128",
    "--eval-episodes", "1",
    "--no-progress-bar",
    "--name", "smoke-ppo",
]  # fmt: skip


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Output directory of ``mango train`` with :data:`SMOKE_ARGV` (artifact in ``<out>/policy``)."""
    from agents.train import main

    out = tmp_path_factory.mktemp("train-smoke")
    assert main([*SMOKE_ARGV, "--out", str(out)]) == 0
    return out
