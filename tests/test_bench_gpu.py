"""`mango bench gpu`'s convergence summary over seeds (the part needs CUDA; its arithmetic does not)."""

from __future__ import annotations

import math

import pytest

from benchmarks.gpu import seed_summary


def test_seed_summary_pairs_each_optimizer_over_its_seeds() -> None:
    rows = [
        {"optimizer": "torch AdamW (fused)", "seed": 0, "loss_vs_adamw": 1.0},
        {"optimizer": "MangoAdamW r0/b8/g0", "seed": 0, "loss_vs_adamw": 0.99},
        {"optimizer": "torch AdamW (fused)", "seed": 1, "loss_vs_adamw": 1.0},
        {"optimizer": "MangoAdamW r0/b8/g0", "seed": 1, "loss_vs_adamw": 1.01},
        {"optimizer": "MangoAdamW r0/b8/g0", "seed": 2, "loss_vs_adamw": 1.03},
        {"optimizer": "MangoAdamW r0/b4/g0", "seed": 0, "error": "RuntimeError: out of memory"},
        {"optimizer": "MangoAdamW r0/b4/g0", "seed": 1, "loss_vs_adamw": 1.2},
    ]
    out = {r["optimizer"]: r for r in seed_summary(rows, "loss_vs_adamw")}
    assert list(out) == ["torch AdamW (fused)", "MangoAdamW r0/b8/g0", "MangoAdamW r0/b4/g0"]
    mango = out["MangoAdamW r0/b8/g0"]
    assert mango["seed"] == "mean (3)"
    assert mango["loss_vs_adamw"] == pytest.approx(1.01)
    # Student t with 2 degrees of freedom (4.303) times the standard error (sd 0.02 over sqrt 3)
    assert mango["ci95"] == pytest.approx(4.303 * 0.02 / math.sqrt(3), rel=1e-3)
    assert out["torch AdamW (fused)"]["ci95"] == pytest.approx(0.0)
    assert out["MangoAdamW r0/b4/g0"]["seed"] == "mean (1)"  # the failed seed is left out
    assert math.isnan(out["MangoAdamW r0/b4/g0"]["ci95"])


def test_seed_summary_skips_an_optimizer_without_values() -> None:
    rows = [{"optimizer": "bnb AdamW8bit", "seed": 0, "error": "ImportError: bitsandbytes"}]
    assert seed_summary(rows, "loss_vs_adamw") == []
