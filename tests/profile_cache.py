"""Seed the profile cache with the project's measured lm-tiny profile, so a test of a job that profiles
itself (the demo, the examples with a service) reads a cache instead of timing every setting again."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from client.profile import cache_path, device_name, model_signature
from client.protocol import CostProfile
from envs.hardware import PROFILE_DIR
from envs.models import build_model


def seed_lm_tiny_profile(cache: Path) -> Path:
    """Cache ``envs/profiles/cpu-lm-tiny.json`` as the profile of lm-tiny on this CPU at one torch thread
    (the demo's and the examples' default; the cache key names the thread count) under ``cache/profiles``,
    without its training step (a cache holds none: each job times its own). An existing entry is kept.
    Returns its path."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        device = device_name(torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    shapes = [tuple(p.shape) for p in build_model("lm-tiny", 0).parameters()]
    path = cache_path(device, model_signature(shapes), cache / "profiles")
    path.parent.mkdir(parents=True, exist_ok=True)
    measured = CostProfile.model_validate_json((PROFILE_DIR / "cpu-lm-tiny.json").read_text())
    update: dict[str, object] = {"device": device, "train_step_s": None}
    with contextlib.suppress(FileExistsError), path.open("x") as f:  # another worker's seed is as good
        f.write(measured.model_copy(update=update).model_dump_json())
    return path
