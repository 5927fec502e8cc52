"""envs.hardware: the environments share the shipped profiles' grids until a profile file changes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from envs import hardware
from envs.hardware import PROFILE_DIR, HardwareSampler, ratio_grids


@pytest.fixture
def profile_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two shipped profiles copied into a directory of their own, which the module reads instead."""
    for name in ("cpu-lm-tiny", "h200-gpt85m"):
        shutil.copy(PROFILE_DIR / f"{name}.json", tmp_path / f"{name}.json")
    monkeypatch.setattr(hardware, "PROFILE_DIR", tmp_path)
    return tmp_path


def test_tables_share_grids_and_see_a_rewritten_or_added_profile(profile_dir: Path) -> None:
    a = HardwareSampler(fixed="cpu-lm-tiny").build()
    b = HardwareSampler(fixed="cpu-lm-tiny").build()
    assert a.profiles[0] is b.profiles[0]  # loaded once while the files stay as they are
    want_t, _ = ratio_grids(a.profiles[0])
    np.testing.assert_array_equal(a.log_t[0], np.log(want_t))
    # a profile rewritten in place (``mango profile --out`` over the old file): the next build reads it
    path = profile_dir / "cpu-lm-tiny.json"
    doc = json.loads(path.read_text())
    doc["settings"]["r0/b8/g0"]["step_s"] *= 3.0
    path.write_text(json.dumps(doc, indent=2))
    c = HardwareSampler(fixed="cpu-lm-tiny").build()
    assert c.profiles[0] is not a.profiles[0]
    grid = hardware._SETTINGS
    i = next(k for k, s in enumerate(grid) if s.label() == "r0/b8/g0")
    assert c.log_t[0, i] == pytest.approx(a.log_t[0, i] + np.log(3.0))
    # an added profile file is known to the next build, and an unknown name is still refused
    shutil.copy(PROFILE_DIR / "h200-lm-medium.json", profile_dir / "h200-lm-medium.json")
    assert HardwareSampler(fixed="h200-lm-medium").build().names == ["h200-lm-medium"]
    with pytest.raises(ValueError, match="unknown hardware profile 'nope'"):
        HardwareSampler(fixed="nope").build()


def test_the_shared_grids_are_read_only(profile_dir: Path) -> None:
    _, grids = hardware._shipped_profiles()
    t, e = grids["h200-gpt85m"]
    with pytest.raises(ValueError):
        t[0] = 0.0
    with pytest.raises(ValueError):
        e[0] = 0.0
