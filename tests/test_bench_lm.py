"""``mango bench lm`` over several seeds: the paired table, the interval curves, the argument errors."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch

from benchmarks.lm import LMBenchConfig, format_seed_table, main, run_one
from envs.data import load_corpus

SMALL = (
    "--model lm-tiny --steps 6 --batch-size 2 --seq-len 16 --eval-batches 2 --corpus-bytes 100000 --threads 1"
)


def test_seeds_table_pairs_each_run_with_its_seeds_adamw(capsys: pytest.CaptureFixture[str]) -> None:
    argv = shlex.split(SMALL + " --seeds 0,1 --settings adamw,off,r4/b4 --no-write")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Over seeds [0, 1]" in out and "seed 1" in out
    # MangoAdamW with compression off is AdamW value for value: a paired difference of exactly 0 on each seed
    assert "| off | 2 |" in out and "+0.00% +- 0.00 | +0.00% |" in out.split("| off | 2 |")[1].splitlines()[0]


def test_run_keeps_the_train_loss_per_interval() -> None:
    cfg = LMBenchConfig(model="lm-tiny", steps=10, batch_size=2, seq_len=16, eval_batches=1, interval_steps=4)
    corpus = load_corpus(100_000)
    val = [corpus.get_batch("val", 2, 16, torch.Generator().manual_seed(3))]
    row = run_one(cfg, "adamw", corpus, val, seed=1)
    assert row["seed"] == 1 and len(row["interval_losses"]) == 3  # 4 + 4 + 2 steps
    assert all(2.0 < v < 7.0 for v in row["interval_losses"])  # byte-level cross-entropy, ln(256) = 5.5


def test_seed_table_marks_a_setting_worse_on_every_seed() -> None:
    rows = [
        {"setting": "adamw", "seed": s, "val_loss": v, "state_bytes_per_param": 8.0}
        for s, v in [(0, 2.0), (1, 2.2), (2, 2.1)]
    ] + [
        {"setting": "r4/b4", "seed": s, "val_loss": v, "state_bytes_per_param": 0.1}
        for s, v in [(0, 2.02), (1, 2.222), (2, 2.121)]
    ]
    line = next(x for x in format_seed_table(rows).splitlines() if x.startswith("| r4/b4"))
    assert "+1.00% +- 0.00" in line and "| +1.00% |" in line  # 1 % worse on each seed, no spread


def test_bad_arguments_name_the_problem() -> None:
    with pytest.raises(ValueError, match="'x' is not an integer"):
        LMBenchConfig(seeds="0,x").seed_list()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            LMBenchConfig(device="cuda").torch_device()


def test_json_is_written_run_by_run_and_marked_complete(tmp_path: Path) -> None:
    out, md = tmp_path / "out", tmp_path / "B.md"
    argv = shlex.split(SMALL + f" --seeds 0,1 --settings adamw,r4/b4 --out-dir {out} --bench-file {md}")
    assert main(argv) == 0
    (path,) = out.glob("lm-*.json")
    doc = json.loads(path.read_text())
    assert doc["complete"] is True and [(r["seed"], r["setting"]) for r in doc["rows"]] == [
        (0, "adamw"),
        (0, "r4/b4"),
        (1, "adamw"),
        (1, "r4/b4"),
    ]
    assert "Over seeds [0, 1]" in md.read_text()  # the section went to --bench-file, not BENCHMARKS.md


def test_one_seed_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    argv = shlex.split(SMALL + " --settings adamw,off,r8/b4/g0.5 --no-write")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| r8/b4/g0.5 |" in out and "| off |" in out and "Over seeds" not in out


def test_nearest_rounding_reaches_the_optimizer() -> None:
    """``--rounding``: the same seed and batches, another rounding, another trajectory (at 8 bits "auto"
    rounds to nearest, "stochastic" draws)."""
    corpus = load_corpus(100_000)
    val = [corpus.get_batch("val", 2, 16, torch.Generator().manual_seed(3))]
    runs = [
        run_one(
            LMBenchConfig(
                model="lm-tiny", steps=8, batch_size=2, seq_len=16, eval_batches=1, min_compress_numel=256,
                rounding=sr,
            ),
            "r0/b8", corpus, val, seed=0,
        )
        for sr in ("stochastic", "stochastic", "auto")
    ]  # fmt: skip
    assert runs[0]["val_loss"] == runs[1]["val_loss"]  # seeded: the same draws
    assert runs[2]["val_loss"] != runs[0]["val_loss"]
