"""``mango demo``: argument handling and the static-baseline choice (fast), and the whole demo end to end with
a real service subprocess, its report, and its clean-up on exit, SIGINT and SIGTERM (slow)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from client.compression import MangoAdamW
from client.protocol import CompressionSetting, CostProfile, Objective, TelemetryRecord
from demo import (
    FIXED_STATIC,
    DemoArgs,
    RunResult,
    choose_static,
    format_table,
    format_verdict,
    main,
    objective_scores,
    parse_setting,
)
from demo.args import AUTO_LR, DEFAULT_STATICS, choose_statics, static_labels
from demo.report import (
    format_seed_table,
    format_seeds_verdict,
    same_schedule_note,
    seeds_for_interval,
    settle_alike,
    t975,
    verdict_noise,
)
from demo.runs import Point, warm_up
from envs.data import load_corpus
from envs.hardware import PROFILE_DIR
from envs.models import PRESETS, build_model
from envs.objectives import preset
from policy_service.launch import pid_alive, port_open
from tests.profile_cache import seed_lm_tiny_profile

ROOT = Path(__file__).resolve().parent.parent
DEMO = [sys.executable, "-m", "mango_cli", "demo"]


# ---------------------------------------------------------------------------------------------- fast


def test_short_shrinks_only_fields_left_at_their_defaults() -> None:
    args = DemoArgs(short=True, steps=35, lr=1e-3).resolved()
    assert args.steps == 40  # explicit 35, rounded up to whole 10-step intervals
    assert (args.batch_size, args.seq_len, args.interval_steps, args.eval_batches) == (8, 32, 10, 2)
    assert args.lr == 1e-3
    full = DemoArgs().resolved()
    assert full.steps % full.interval_steps == 0 and full.steps == DemoArgs.steps


def test_every_lm_preset_has_a_default_lr() -> None:
    """``--lr 0`` (the default) takes the model's stable peak lr: every model the demo accepts has one."""
    assert set(AUTO_LR) == set(PRESETS) and all(0 < lr < 1 for lr in AUTO_LR.values())
    assert DemoArgs().lr == 0 and AUTO_LR["gpt-85m"] < AUTO_LR["lm-tiny"]


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("objective", "nope", "choose one of"),
        ("static_setting", "r7/b8", "rR/bB"),
        ("lr", -1.0, "lr=-1.0"),
        ("policy_dir", "/does/not/exist", "not a directory"),
        ("model", "digits-mlp", "LM preset"),
    ],
)
def test_check_names_the_bad_field(field: str, value: Any, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        DemoArgs(**{field: value}).resolved().check()


def test_help_documents_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(DemoArgs):
        assert "--" + f.name.replace("_", "-") in out


def test_parse_setting() -> None:
    assert parse_setting("r8/b8/g0") == CompressionSetting(rank=8, bits=8, gamma=0.0)
    assert parse_setting("r0/b32") == CompressionSetting.off()
    assert parse_setting("r4/b2/g0.5").gamma == 0.5
    for bad in ("", "rank8", "r8", "r8/b5"):
        with pytest.raises(ValueError, match="rR/bB"):
            parse_setting(bad)


def _bench(path: Path, rows: list[tuple[str, float, float]]) -> None:
    doc = {
        "command": "python -m benchmarks.lm --steps 300",
        "rows": [
            {"setting": s, "val_loss": v, "state_bytes_per_param": b, "finite": math.isfinite(v)}
            for s, v, b in rows
        ],
    }
    path.write_text(json.dumps(doc))


def test_choose_static_fixed_and_from_benchmark_results(tmp_path: Path) -> None:
    setting, why = choose_static(FIXED_STATIC, tmp_path)
    assert setting.label() == "r0/b8/g0" and "strong default" in why
    setting, why = choose_static("auto", tmp_path)  # no results: the fixed choice, and it says so
    assert setting.label() == "r0/b8/g0" and "no results" in why
    _bench(
        tmp_path / "lm-20260101-000000.json",
        [
            ("adamw", 2.00, 8.0),
            ("off", 2.00, 8.0),
            ("r8/b8", 2.015, 0.7),
            ("r8/b4", 2.019, 0.4),
            ("r4/b2", 2.5, 0.2),
        ],
    )
    setting, why = choose_static("auto", tmp_path)  # fewest bytes within 1 % of AdamW's loss
    assert setting.label() == "r8/b4/g0" and "lm-20260101-000000.json" in why and "within 1 %" in why
    _bench(
        tmp_path / "lm-20260202-000000.json", [("adamw", 2.0, 8.0), ("r8/b8", 2.1, 0.7), ("r4/b2", 2.3, 0.2)]
    )
    setting, why = choose_static("auto", tmp_path)  # the newest file; none within 1 %: the lowest loss
    assert setting.label() == "r8/b8/g0" and "20260202" in why and "lowest loss" in why
    # a file of several seeds (mango bench lm --seeds): each run against its own seed's AdamW, then averaged;
    # against seed 0's AdamW alone r8/b4 (seed 1: 2.21 vs 2.0) would look 10 % worse
    doc = {
        "command": "python -m benchmarks.lm --seeds 0,1",
        "rows": [
            {"setting": s, "seed": seed, "val_loss": v, "state_bytes_per_param": b}
            for s, seed, v, b in [
                ("adamw", 0, 2.0, 8.0), ("r8/b4", 0, 2.01, 0.4), ("r8/b8", 0, 2.0, 0.7),
                ("adamw", 1, 2.2, 8.0), ("r8/b4", 1, 2.21, 0.4), ("r8/b8", 1, 2.2, 0.7),
            ]
        ],
    }  # fmt: skip
    (tmp_path / "lm-20260303-000000.json").write_text(json.dumps(doc))
    setting, why = choose_static("auto", tmp_path)
    assert setting.label() == "r8/b4/g0" and "20260303" in why and "within 1 %" in why


def test_format_table_marks_baselines_without_decisions() -> None:
    runs = [
        RunResult("adaptive (service)", "adaptive", 2.5, 80_000, 100_000, 1000.0, "modelled", 10.0, 29, 1, 2),
        RunResult("adamw (torch)", "adamw", 2.2, 800_000, 100_000, 800.0, "modelled", 8.0),
    ]
    table = format_table(runs).splitlines()
    assert table[0].startswith("| run | setting | final val loss")
    assert "| 2.5000 | 0.80 / 0.80 | 1,000 (modelled) | 10.0 | 29 | 1 |" in table[2]
    assert table[3].endswith("| - | - |")


# ---------------------------------------------------------------------------------------------- slow


def _run_demo(
    out: Path, *extra: str, timeout_s: float = 400, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DEMO, "--short", "--no-progress", "--out-dir", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=None if env is None else {**os.environ, **env},
    )


def _assert_service_gone(pid: int, port: int) -> None:
    assert not pid_alive(pid), f"service pid {pid} still exists"
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # nothing left in its process group either
    assert not port_open("127.0.0.1", port), f"port {port} still accepts connections"


def _assert_summary(out: Path) -> dict[str, Any]:
    summary = json.loads((out / "summary.json").read_text())
    runs = {r["name"].split()[0]: r for r in summary["runs"]}
    assert set(runs) == {"adaptive", "adamw", "static"}
    for r in runs.values():
        for key in ("final_val_loss", "state_bytes_per_param", "energy_j", "wall_s"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (r["name"], key)
        assert r["energy_source"] in ("modelled", "nvml", "zeus")
        assert len(r["points"]) == summary["args"]["steps"] // summary["args"]["interval_steps"]
    assert runs["adamw"]["state_bytes_per_param"] == pytest.approx(8.0, rel=0.01)
    assert runs["static"]["state_bytes_per_param"] < 4.0  # r0/b8/g0: ~3.1
    assert runs["adaptive"]["decisions"] >= 1 and runs["adaptive"]["fallbacks"] == 0
    assert runs["adaptive"]["policies"], "no decision came from the service"
    assert summary["service"]["stopped"] is True
    png = (out / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    lines = (out / "decisions.jsonl").read_text().splitlines()
    assert len(lines) == runs["adaptive"]["decisions"]
    first, *rest = (json.loads(line) for line in lines)
    assert first["policy"] == "first:prior" and first["step"] == 0  # decided before the first interval
    assert all(x["source"] == "service" for x in rest)
    # what the policy saw: one contract record per interval of the adaptive run
    lines = (out / "telemetry.jsonl").read_text().splitlines()
    recs = [TelemetryRecord.model_validate_json(x) for x in lines]
    assert [r.step for r in recs] == [p["step"] for p in runs["adaptive"]["points"]]
    assert all(math.isfinite(r.grad_norm) and r.grad_norm > 0 for r in recs)
    return summary


@pytest.mark.slow
def test_demo_short_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    # a cached profile of the demo's job (the settings' costs; a cache holds no training step): the demo
    # must time its own step (the optimizer share, which the policy reads), not profile every setting again
    cached = seed_lm_tiny_profile(tmp_path / "cache")
    proc = _run_demo(out, env={"MANGO_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = _assert_summary(out)
    seeded = CostProfile.model_validate_json((PROFILE_DIR / "cpu-lm-tiny.json").read_text())
    assert CostProfile.model_validate_json(cached.read_text()).train_step_s is None  # not cached
    # the profile the hook sent is kept beside the telemetry, for replays of the policy's windows
    used = CostProfile.model_validate_json((out / "profile.json").read_text())
    if summary["device"] == "cpu":
        assert used.optimizer_share is not None and used.settings == seeded.settings
    svc = summary["service"]
    _assert_service_gone(svc["pid"], svc["port"])
    # The table and what served the decisions are printed; a modelled energy figure says so.
    assert "| run | setting | final val loss" in proc.stdout
    assert "verdict (balanced):" in proc.stdout and set(summary["objective_scores"]) == {
        r["name"] for r in summary["runs"]
    }
    assert (
        f"policy 'default' -> {'learned' if svc['served_kind'] == 'learned' else 'heuristic'}" in proc.stdout
    )
    if summary["device"] == "cpu":
        assert "(modelled)" in proc.stdout and "MODELLED" in proc.stdout
    assert summary["args"]["lr"] == AUTO_LR[summary["args"]["model"]]  # --lr 0 resolved to the model's
    log = (out / "service.log").read_text()
    assert "dev mode" not in log.lower(), "the demo must not run the service in dev mode"


@pytest.mark.slow
def test_demo_with_a_learned_policy(tmp_path: Path) -> None:
    from tests.policy_service.support import export_tiny

    export_tiny(tmp_path / "policies", name="tiny", version="t1")
    out = tmp_path / "demo"
    proc = _run_demo(
        out,
        *("--policy-dir", str(tmp_path / "policies"), "--policy", "tiny", "--seeds", "2"),
        # two static runs, the first a schedule (r0/b32/g0 for one interval, then r0/b8/g0): the best in
        # hindsight is weighed
        *("--static-setting", "r0/b32:1>r0/b8/g0,r0/b8/g0"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = _assert_summary(out)
    names = ["adaptive (service)", "adamw (torch)", "static r0/b32/g0:1>r0/b8/g0", "static r0/b8/g0"]
    assert [r["name"] for r in summary["runs"]] == names
    assert summary["static"]["settings"] == ["r0/b32/g0:1>r0/b8/g0", "r0/b8/g0"]
    played = [p["setting"] for p in summary["runs"][2]["points"]]
    assert played[0] == "r0/b32/g0" and set(played[1:]) == {"r0/b8/g0"} and len(played) >= 2
    assert all([r["name"] for r in sd["runs"]] == names for sd in summary["seeds"])
    assert "x 4 runs" in proc.stdout
    assert summary["service"]["served_kind"] == "learned"
    assert set(summary["runs"][0]["policies"]) == {"tiny@t1"}
    assert "learned policy 'tiny' version t1" in proc.stdout
    # two seeds: each with its own three runs (different initial weights), J per seed, the verdict over both
    s0, s1 = summary["seeds"]
    assert (s0["seed"], s1["seed"]) == (0, 1) and s0["runs"][1]["final_val_loss"] != s1["runs"][1][
        "final_val_loss"
    ]
    assert s0["objective_scores"] == summary["objective_scores"]
    assert (
        summary["verdict"].startswith("verdict (balanced, 2 seeds):") and "of 2 seeds" in summary["verdict"]
    )
    assert "| mean |" in (out / "summary.md").read_text()
    assert (out / "decisions-1.jsonl").exists() and (out / "profile-1.json").exists()
    _assert_service_gone(summary["service"]["pid"], summary["service"]["port"])


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_the_demo_and_its_service(tmp_path: Path, sig: signal.Signals) -> None:
    from benchmarks.demo_signals import one_run  # `mango bench signals` runs this at random delays

    out = tmp_path / "demo"
    # 1 s after the service is ready: into the run (or still asking /v1/policies: either way it must stop)
    row = one_run(sig, 1.0, out)
    # It cleaned up, then ended by the signal (a shell shows 130 / 143): -sig from Popen, whenever it came.
    assert row["returncode"] == -sig, row["stderr_tail"]
    assert row["said_stopped"], row["stderr_tail"]
    assert row["service_was_up"]
    _assert_service_gone(row["service"]["pid"], row["service"]["port"])
    assert not (out / "summary.json").exists()


def test_objective_scores_and_verdict() -> None:

    def run(name: str, loss: float, state: int, energy: float, wall: float) -> RunResult:
        return RunResult(name, name, loss, state, 100, energy, "modelled", wall)

    runs = [run("adaptive (service)", 2.2, 300, 10.0, 1.0), run("adamw (torch)", 2.0, 800, 10.0, 1.0),
            run("static r0/b8/g0", 2.02, 300, 10.0, 1.0)]  # fmt: skip
    obj = Objective(w_loss=5.0, w_memory=0.5, w_energy=0.25, w_time=0.25)
    scores = objective_scores(runs, obj)
    # a loss 10 % above AdamW's costs 0.1 x w_loss; AdamW's own J is w_memory + w_energy + w_time
    assert scores["adamw (torch)"] == pytest.approx(1.0)
    assert scores["adaptive (service)"] == pytest.approx(5 * 0.1 + 0.5 * 300 / 800 + 0.5)
    verdict = format_verdict(runs, scores, "balanced")
    assert verdict.startswith("verdict (balanced): static r0/b8/g0 wins")
    assert verdict.endswith("J 0.738 vs adaptive 1.188 (-61.0% for adaptive)")  # (0.738 - 1.188) / 0.738
    # a best J at or below 0 (a loss better than AdamW's under loss-first, the GPU demo of session 28) or
    # smaller than the gap: the J difference, not a share of it
    neg = {"adaptive (service)": 0.162, "adamw (torch)": 0.2, "static r0/b8/g0": -0.139}
    assert format_verdict(runs, neg, "loss-first") == (
        "verdict (loss-first): static r0/b8/g0 wins, J -0.139 vs adaptive 0.162 "
        "(J difference -0.301 for adaptive)"
    )
    small = {"adaptive (service)": 0.05, "adamw (torch)": 0.2, "static r0/b8/g0": 0.12}
    assert format_verdict(runs, small, "loss-first").endswith("(+58.3%)")
    # one seed: a difference that one run's wall-time and energy noise can make names no winner (make demo's
    # verdict of session 33); modelled energy follows the wall time, a measured one is steadier
    noise = verdict_noise(obj, runs)
    assert noise == pytest.approx(0.25 * 0.10 + 0.25 * 0.10)
    nvml = [RunResult(r.name, r.label, 2.0, 300, 100, 10.0, "nvml", 1.0) for r in runs]
    assert verdict_noise(obj, nvml) == pytest.approx(0.25 * 0.10 + 0.25 * 0.03)
    near = {"adaptive (service)": 0.939, "adamw (torch)": 1.0, "static r0/b8/g0": 0.940}
    assert format_verdict(runs, near, "balanced", noise) == (
        "verdict (balanced): no clear winner on one seed, J 0.939 (adaptive) vs 0.940 (static r0/b8/g0): a "
        "difference of 0.001, within the 0.050 that one run's wall-time and energy noise can make; --seeds 3 "
        "or more settles it"
    )
    clear = format_verdict(runs, scores, "balanced", noise)  # a gap of 0.45: a winner
    assert clear.startswith("verdict (balanced): static r0/b8/g0 wins")
    # over seeds: the mean decides, and the tally says on how many seeds the adaptive run was better
    names = ["adaptive (service)", "adamw (torch)", "static r0/b8/g0"]
    per_seed = [
        dict(zip(names, j, strict=True)) for j in ([0.60, 1.0, 0.70], [0.80, 1.0, 0.65], [0.62, 1.0, 0.70])
    ]
    line = format_seeds_verdict(per_seed, names, "balanced")
    # paired differences +0.10, -0.15, +0.08: the 95 % interval (t, 2 df) holds 0, so nobody wins
    assert line.startswith(
        "verdict (balanced, 3 seeds): no clear winner, J 0.673 (adaptive) vs 0.683 (static"
    )
    assert "better on 2 of 3 seeds" in line and "paired J difference +0.010 +/- 0.345 (95 % CI)" in line
    # sd 0.139 of the differences: +/- 10 % of 0.683 needs the n where t975(n-1) * 0.139 / sqrt(n) <= 0.0683
    assert "+/- 10 % of 0.683 needs ~19 seeds at this spread" in line
    steady = [
        dict(zip(names, j, strict=True)) for j in ([0.60, 1.0, 0.70], [0.62, 1.0, 0.70], [0.61, 1.0, 0.72])
    ]
    line = format_seeds_verdict(steady, names, "balanced")
    assert line.startswith("verdict (balanced, 3 seeds): adaptive wins, J 0.610 vs 0.707 for static r0/b8/g0")
    flipped = [{**s, "adaptive (service)": 0.80} for s in steady]
    assert format_seeds_verdict(flipped, names, "balanced").startswith(
        "verdict (balanced, 3 seeds): static r0/b8/g0 wins, J 0.707 vs adaptive 0.800"
    )
    table = format_seed_table([0, 1, 2], per_seed, names).splitlines()
    assert table[2] == "| 0 | 0.600 | 1.000 | 0.700 |" and table[-1] == "| mean | 0.673 | 1.000 | 0.683 |"
    budget = objective_scores(runs, obj.model_copy(update={"memory_budget_bytes": 200}))
    assert budget["adamw (torch)"] == float("inf")
    # a diverged adaptive run (the H200 demo's NaN, session 9) is the worst run, and the verdict says why
    runs[0] = run("adaptive (service)", float("nan"), 300, 10.0, 1.0)
    nan_scores = objective_scores(runs, obj)
    assert nan_scores["adaptive (service)"] == float("inf")
    assert format_verdict(runs, nan_scores, "balanced") == (
        "verdict (balanced): static r0/b8/g0 wins, J 0.738: the adaptive run diverged (final loss nan)"
    )
    per_seed[1] = {**per_seed[1], "adaptive (service)": float("inf")}
    line = format_seeds_verdict(per_seed, names, "balanced")
    assert line.startswith("verdict (balanced, 3 seeds): static r0/b8/g0 wins, J")
    assert line.endswith("adaptive J inf (diverged or over the memory budget) on 1 of 3 seeds")


@pytest.mark.gpu
def test_warm_up_compiles_the_opening_kernels_before_the_timed_runs() -> None:
    """On CUDA the warm-up steps every optimizer a timed run opens with, so a later first step is no slower
    than the one after it (the process's first run paid the compilation before)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    device = torch.device("cuda")
    args = DemoArgs(model="lm-tiny", short=True).resolved()
    corpus = load_corpus(args.corpus_bytes)
    static = CompressionSetting.parse("r0/b8/g0")
    assert warm_up(args, corpus, device, static) > 0.0
    model = build_model(args.model, args.seed + 7).to(device)
    opt = MangoAdamW(model.parameters(), lr=1e-3, setting=static, seed=0)
    times = []
    for _ in range(2):
        x, y = corpus.get_batch("train", args.batch_size, args.seq_len, torch.Generator().manual_seed(0))
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.loss(x.to(device), y.to(device)).backward()
        opt.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    assert times[0] < 5 * times[1] + 0.05, times  # no compilation left in the first step


def test_warm_up_does_nothing_on_the_cpu() -> None:
    args = DemoArgs(short=True).resolved()
    assert warm_up(args, None, torch.device("cpu"), CompressionSetting.parse("r0/b8/g0")) == 0.0  # type: ignore[arg-type]


def test_t_quantiles_are_students() -> None:
    """The verdict's t quantiles are scipy's: the table to 3 decimals, the expansion past it to 0.001."""
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 31):
        assert t975(df) == pytest.approx(float(stats.t.ppf(0.975, df)), abs=5e-4)
    for df in (31, 40, 60, 200, 10_000):
        assert t975(df) == pytest.approx(float(stats.t.ppf(0.975, df)), abs=1e-3)
    with pytest.raises(ValueError, match="two seeds"):
        t975(0)


def test_the_default_static_runs_depend_on_the_device() -> None:
    """``--static-setting default``: one run on a CPU (``make demo`` stays short); on a GPU the best static
    setting measured under each preset, so the verdict weighs the best of them."""
    assert DemoArgs().static_setting == "default"
    DemoArgs().resolved().check()  # 'default' is valid before the device is known
    assert [s.label() for s, _ in choose_statics("default")] == [FIXED_STATIC]
    gpu = choose_statics("default", "cuda")
    assert [s.label() for s, _ in gpu] == ["r0/b8/g0", "r0/b4/g0", "r64/b4/g0"]
    assert all("the default on cuda" in why for _, why in gpu)
    assert static_labels(DEFAULT_STATICS["cpu"]) == [FIXED_STATIC]
    assert static_labels(DEFAULT_STATICS["cuda"]) == ["r0/b8/g0", "r0/b4/g0", "r64/b4/g0"]


def test_several_static_settings_parse_in_order_and_name_a_bad_entry() -> None:
    assert static_labels("r0/b8,r64/b4/g0 , r0/b4/g0.5") == ["r0/b8/g0", "r64/b4/g0", "r0/b4/g0.5"]
    assert static_labels("r0/b8:1 > r0/b4,r0/b4") == ["r0/b8/g0:1>r0/b4/g0", "r0/b4/g0"]
    assert [s.label() for s, _ in choose_statics("r0/b8:2>r0/b4")] == ["r0/b8/g0:2>r0/b4/g0"]
    assert [s.label() for s, _ in choose_statics("r0/b4,r0/b8/g0")] == ["r0/b4/g0", "r0/b8/g0"]
    assert [s.label() for s, _ in choose_statics("r0/b4")] == ["r0/b4/g0"]
    with pytest.raises(ValueError, match="r0/b8/g0 is given twice"):
        static_labels("r0/b8,r0/b8/g0")
    with pytest.raises(ValueError, match="an empty entry"):
        static_labels("r0/b8,")
    with pytest.raises(ValueError, match="rR/bB"):
        DemoArgs(static_setting="r0/b8,r7/b8").resolved().check()


def test_several_statics_the_verdict_weighs_the_best_in_hindsight() -> None:
    """With several static runs the verdict names the one with the lowest mean J; runs that trained alike
    tie only when the static run the adaptive one copied is that best one."""

    def run(name: str, settings: list[str], loss: float, state: int) -> RunResult:
        pts = [Point(20 * (i + 1), loss, state, 1.0, 0.1, s, 0, 8, 0.0) for i, s in enumerate(settings)]
        return RunResult(name, name, loss, state, 100, 10.0, "nvml", 10.0, points=pts)

    def seed(adaptive_state: int, r0b4_loss: float) -> list[RunResult]:
        return [
            run("adaptive (service)", ["r0/b8/g0"] * 3, 2.0, adaptive_state),
            run("adamw (torch)", ["adamw"] * 3, 2.0, 800),
            run("static r0/b8/g0", ["r0/b8/g0"] * 3, 2.0, 305),
            run("static r0/b4/g0", ["r0/b4/g0"] * 3, r0b4_loss, 114),
        ]

    obj = preset("balanced")
    better_r0b4 = [seed(305, 2.0), seed(305, 2.0)]  # r0/b4/g0 as good in loss, fewer bytes: the best static
    names = [r.name for r in better_r0b4[0]]
    per_seed = [objective_scores(rs, obj) for rs in better_r0b4]
    raw = format_seeds_verdict(per_seed, names, "balanced")
    assert "static r0/b4/g0 wins" in raw
    line = settle_alike(raw, better_r0b4, per_seed, "balanced")
    assert line.startswith(raw) and line.endswith("they trained alike")  # copied r0/b8/g0, not the best
    worse_r0b4 = [seed(305, 2.4), seed(305, 2.4)]  # 20 % worse loss: r0/b8/g0 is the best static
    per_seed = [objective_scores(rs, obj) for rs in worse_r0b4]
    raw = format_seeds_verdict(per_seed, names, "balanced")
    line = settle_alike(raw, worse_r0b4, per_seed, "balanced")
    assert line.startswith("verdict (balanced, 2 seeds): a tie with the static run") and "r0/b8/g0" in line


def test_the_verdict_says_when_the_adaptive_run_played_the_static_setting() -> None:
    """The H200 demo of session 12: the policy played r0/b8/g0 in all 30 intervals, so the adaptive and
    static runs trained identically; the verdict says so, and says nothing once one interval differs."""

    def run(name: str, settings: list[str]) -> RunResult:
        pts = [Point(20 * (i + 1), 2.0, 300, 1.0, 0.1, s, 0, 8, 0.0) for i, s in enumerate(settings)]
        return RunResult(name, name, 2.0, 300, 100, 10.0, "modelled", 1.0, points=pts)

    same = [run("adaptive (service)", ["r0/b8/g0"] * 3), run("adamw (torch)", ["adamw"] * 3),
            run("static r0/b8/g0", ["r0/b8/g0"] * 3)]  # fmt: skip
    note = same_schedule_note([same, same])
    assert (
        note == "; the adaptive run played r0/b8/g0 in every interval, as the static run: they trained alike"
    )
    moved = [run("adaptive (service)", ["r0/b8/g0", "r16/b8/g0", "r16/b8/g0"]), *same[1:]]
    assert same_schedule_note([same, moved]) == ""
    assert same_schedule_note([[run("adaptive (service)", []), *same[1:]]]) == ""


def test_runs_that_trained_alike_tie_whatever_their_timing() -> None:
    """The H200 time-first demo of session 14: the policy played r0/b8/g0 in every interval, as the static
    run, but its runs happened to take 12.4 s against the static run's 15.1 s, and the verdict named the
    adaptive run the winner. Identical work is a tie; once one interval differs the timing counts again,
    and when AdamW beats the static run the verdict stays AdamW's with the note."""

    def run(name: str, settings: list[str], loss: float, state: int, wall: float) -> RunResult:
        pts = [Point(20 * (i + 1), loss, state, 1.0, 0.1, s, 0, 8, 0.0) for i, s in enumerate(settings)]
        return RunResult(name, name, loss, state, 100, 10.0, "nvml", wall, points=pts)

    def seed(
        adaptive_settings: list[str], adaptive_wall: float, static_loss: float = 1.834
    ) -> list[RunResult]:
        return [
            run("adaptive (service)", adaptive_settings, 1.834, 305, adaptive_wall),
            run("adamw (torch)", ["adamw"] * 3, 1.832, 800, 15.7),
            run("static r0/b8/g0", ["r0/b8/g0"] * 3, static_loss, 305, 15.1),
        ]

    obj = preset("time-first")
    alike = [seed(["r0/b8/g0"] * 3, 12.4), seed(["r0/b8/g0"] * 3, 12.6)]
    names = [r.name for r in alike[0]]
    per_seed = [objective_scores(rs, obj) for rs in alike]
    raw = format_seeds_verdict(per_seed, names, "time-first")
    assert "adaptive wins" in raw  # what the timing alone says
    line = settle_alike(raw, alike, per_seed, "time-first")
    assert line.startswith("verdict (time-first, 2 seeds): a tie with the static run, J ")
    assert "adaptive wins" not in line and "played r0/b8/g0 in every interval" in line
    moved = [seed(["r0/b8/g0", "r16/b8/g0", "r16/b8/g0"], 12.4), alike[1]]
    moved_j = [objective_scores(rs, obj) for rs in moved]
    assert settle_alike(raw, moved, moved_j, "time-first") == raw
    worse_static = [seed(["r0/b8/g0"] * 3, 12.4, static_loss=3.0)] * 2  # AdamW beats the static run
    kept = settle_alike(raw, worse_static, [objective_scores(rs, obj) for rs in worse_static], "time-first")
    assert kept.startswith(raw) and kept.endswith("they trained alike")
    # the CPU demo of session 25: the policy played r0/b32/g0 (AdamW's update) throughout and its run took
    # 9.5 s against AdamW's 9.8 s; the verdict said "adaptive wins". It is a tie with AdamW.
    as_adamw = [
        seed(["r0/b32/g0"] * 3, 15.2, static_loss=3.0),
        seed(["r0/b32/g0"] * 3, 15.3, static_loss=3.0),
    ]
    scores = [objective_scores(rs, obj) for rs in as_adamw]
    raw = format_seeds_verdict(scores, names, "time-first")
    assert "adaptive wins" in raw
    line = settle_alike(raw, as_adamw, scores, "time-first")
    assert line.startswith("verdict (time-first, 2 seeds): a tie with AdamW, J ") and "AdamW's update" in line
    one_off = [seed(["r0/b32/g0", "r0/b8/g0", "r0/b32/g0"], 15.2, static_loss=3.0), as_adamw[1]]
    assert settle_alike(raw, one_off, scores, "time-first") == raw


def test_seeds_for_interval_is_the_first_n_whose_interval_fits() -> None:
    sd, half = 0.059, 0.057  # the held-out GPU job's 4 balanced seeds (session 24): ~0.1 of J 0.572
    n = seeds_for_interval(sd, half)
    assert t975(n - 1) * sd / math.sqrt(n) <= half < t975(n - 2) * sd / math.sqrt(n - 1)
    assert seeds_for_interval(0.0, 0.01) == 2 and seeds_for_interval(1.0, 1e-6, most=50) == 50
    with pytest.raises(ValueError, match="half_width"):
        seeds_for_interval(0.1, 0.0)
