"""``mango bench policy``: the stages it times, hot and with the caches evicted between calls."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.policy_latency import DEFAULT_POLICY, _thrasher, main, measure


def test_measure_times_every_stage_hot_and_cold() -> None:
    assert _thrasher(0) is None
    for kib in (0, 256):
        res = measure(DEFAULT_POLICY, calls=20, warmup=2, thrash_kib=kib)
        assert set(res) >= {"encode", "forward (numpy)", "decision (numpy)"}
        for ms in res.values():
            assert ms.shape == (2, 20) and np.all(ms[0] > 0) and np.all(np.isfinite(ms))


def test_negative_thrash_is_refused() -> None:
    with pytest.raises(ValueError, match="--thrash-kib -1"):
        main(["--thrash-kib", "-1"])
