"""Fixtures of the env tests: a private cache directory, so tests never touch ~/.cache/mango."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "mango-cache"
    monkeypatch.setenv("MANGO_CACHE_DIR", str(d))
    return d
