"""The fused multi-tensor step (client/compression/fused.py + kernels/triton_step.py) against the torch path.

Runs the Triton kernels under ``TRITON_INTERPRET=1`` on CPU tensors (``make test`` sets it) and compiled on a
CUDA GPU (``-m gpu``). Round-to-nearest makes the two paths comparable value by value: they agree up to float
rounding, which can flip a quantization code at a tie, so the checks bound the mean difference tightly and
the largest one loosely.
"""

from __future__ import annotations

import copy
import math
import random
from typing import Any

import pytest
import torch

from client.compression import MangoAdamW, fused
from client.compression import refresh as refresh_mod
from client.compression.kernels import available
from client.compression.refresh import RefreshGraph
from client.protocol import CompressionSetting as S
from client.telemetry import global_grad_norm

pytestmark = pytest.mark.skipif(
    not available() or not (torch.cuda.is_available() or fused.fused_available(torch.device("cpu"))),
    reason="Triton kernels unavailable: install triton, run with TRITON_INTERPRET=1 (make test) or on CUDA",
)

LR = 1e-2


@pytest.fixture(autouse=True)
def _big_tiles_when_interpreted(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The interpreter pays per program: CPU runs use 4096-value tiles (the draws do not depend on the tile),
    except the test marked ``default_tile``; on CUDA everything runs the shipped defaults."""
    if not torch.cuda.is_available() and "default_tile" not in request.keywords:
        monkeypatch.setattr(fused, "MATRIX_TILE", 4096)
        monkeypatch.setattr(fused, "MATRIX_TILE_BY_BITS", {})
    if "tf32" not in request.keywords:  # value by value against the torch path: fp32-accurate products
        monkeypatch.setattr(fused, "QUANTIZED_DOT_PRECISION", "tf32x3")


SHAPES = [(64, 256), (256, 64), (48, 100), (64,)]  # wide, tall (transposed canonical view), odd, exact


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _params(dtype: torch.dtype = torch.float32) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter((torch.randn(s, generator=gen) * 0.1).to(_device(), dtype)) for s in SHAPES]


def _grads(step: int, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return [(torch.randn(p.shape, generator=gen) * 0.01).to(p.device, p.dtype) for p in params]


def _run(params: list[torch.nn.Parameter], opt: MangoAdamW, steps: range) -> None:
    for k in steps:
        for p, g in zip(params, _grads(k, params)):
            p.grad = g
        opt.step()


def _pair(setting: S, dtype: torch.dtype = torch.float32, steps: int = 4, **kw: object):
    out = []
    for use_fused in (False, True):
        params = _params(dtype)
        opt = MangoAdamW(
            params, lr=LR, setting=setting, min_compress_numel=1024, fused=use_fused, seed=3, **kw
        )
        _run(params, opt, range(steps))
        out.append((params, opt))
    return out


#: The factored v's sums of c^2 in the programs' own slots (fused.FACTOR_SUMS), with first-level groups of 3
#: slot rows: at the CPU tests' 4096-value tiles the (64, 256) tensor's row sums span 4 strips, the
#: (256, 64) tensor's column sums 4 programs, so both are added up in two levels, one group a partial one.
PARTIALS = {"FACTOR_SUMS": "partials", "PARTIALS_GROUP": 3}
#: The factored second moment asked for (its default at 2-3 bits; at 4 bits until session 30).
FAC = {"factor_second_moment": True}
#: NF4 codes asked for (the default at 4 bits until session 30; the uniform code since).
NF4 = {"quant_mode": "nf4"}


def _set_knobs(monkeypatch: pytest.MonkeyPatch, knobs: dict[str, Any]) -> None:
    """Set :mod:`fused`'s module knobs for one test."""
    for name, value in knobs.items():
        monkeypatch.setattr(fused, name, value)


@pytest.mark.parametrize(
    ("setting", "kw", "n_fused", "knobs"),
    [
        (S(rank=0, bits=8), {}, 3, {}),  # full sqrt(v) at 8 bits: every matrix fused
        (S(rank=0, bits=4), {}, 3, {}),  # uniform m, sqrt(v) on the 4-bit code: every matrix fused
        (S(rank=0, bits=4), FAC, 2, {}),  # factored v: 100 columns are not a multiple of the 64-block
        (S(rank=0, bits=4), {**FAC, "error_feedback": False}, 2, {}),
        (S(rank=0, bits=4), NF4, 3, {}),
        (S(rank=0, bits=4), FAC, 2, PARTIALS),
        (S(rank=0, bits=4), {**FAC, "error_feedback": False}, 2, PARTIALS),
    ],
)
def test_fused_matches_torch_path(
    monkeypatch: pytest.MonkeyPatch, setting: S, kw: dict, n_fused: int, knobs: dict
) -> None:
    _set_knobs(monkeypatch, knobs)
    (pt, ot), (pf, of) = _pair(setting, stochastic_rounding=False, **kw)
    plan = of._plan
    assert plan is not None, "the fused path did not run"
    assert sum(len(g.index) for g in plan.matrix) == n_fused
    assert bool(plan.partials) == bool(knobs) == any(g.sums is not None for g in plan.matrix)
    assert sum(len(g.index) for g in plan.exact) == 1
    moved = 4 * LR
    for a, b in zip(pt, pf):
        d = (a - b).detach().abs()
        assert float(d.mean()) < 2e-3 * moved, (tuple(a.shape), float(d.mean()))
        assert float(d.max()) < moved, (tuple(a.shape), float(d.max()))
    st, sf = ot.compression_stats(), of.compression_stats()
    assert of.compression_stats() == sf and ot.compression_stats() == st  # reading twice changes nothing
    # the fused path estimates the ratio from one program in STATS_EVERY (module docstring of triton_step)
    assert sf.compression_error == pytest.approx(st.compression_error, rel=0.25)
    assert sf.grad_norm == pytest.approx(st.grad_norm, rel=1e-5)
    assert sf.spectral_tail == 0.0 and sf.skipped_steps == 0.0
    assert ot.state_bytes() == of.state_bytes()


@pytest.mark.parametrize(
    ("setting", "kw"), [(S(rank=0, bits=8), {}), (S(rank=0, bits=4), {}), (S(rank=0, bits=4), FAC)]
)
def test_fused_stochastic_rounding_tracks_torch_path(setting: S, kw: dict) -> None:
    """Different random streams: not equal value by value, but the fused run is no farther from the torch
    run than another seed's torch run is (equal in distribution), and both stay close on average."""
    (pt, _), (pf, of) = _pair(setting, stochastic_rounding=True, steps=6, **kw)
    assert of._plan is not None and of._plan.matrix
    other = _params()
    _run(other, MangoAdamW(other, lr=LR, setting=setting, min_compress_numel=1024, fused=False, seed=4,
                           stochastic_rounding=True, **kw), range(6))  # fmt: skip
    for a, b, c in zip(pt[:3], pf[:3], other[:3]):
        fused_gap, seed_gap = (float((a - x).detach().abs().mean()) for x in (b, c))
        assert 0 < fused_gap < 1.25 * seed_gap < 0.15 * 6 * LR, (tuple(a.shape), fused_gap, seed_gap)


@pytest.mark.default_tile
def test_fused_default_tile_matches_big_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared tile (one block per program) and a 4096-value tile compute the same step bit for bit
    (8 bits without its own tile here: test_a_widths_own_tile_matches_the_default_tile checks that one)."""
    runs = []
    monkeypatch.setattr(fused, "MATRIX_TILE_BY_BITS", {})
    for tile in (fused.MATRIX_TILE, 4096):
        monkeypatch.setattr(fused, "MATRIX_TILE", tile)
        params = _params()
        opt = MangoAdamW(params, lr=LR, setting=S(rank=0, bits=8), min_compress_numel=1024, fused=True)
        _run(params, opt, range(3))  # the first step creates the state on the torch path
        assert opt._plan is not None and opt._plan.tile_rows == tile // opt._plan.block
        runs.append(params)
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@pytest.mark.default_tile
def test_a_widths_own_tile_matches_the_default_tile(monkeypatch: pytest.MonkeyPatch) -> None:
    """``MATRIX_TILE_BY_BITS``: 8 bits at 512 values a program (its own cap) steps bit for bit as the shared
    tile does, a rank-0 and a projected setting; the plan lays its tables out and launches with that tile,
    and the other widths keep theirs."""
    runs = []
    for by_bits in ({}, {8: (512, 0)}):
        monkeypatch.setattr(fused, "MATRIX_TILE_BY_BITS", by_bits)
        params = _params()
        opt = MangoAdamW(params, lr=LR, setting=S(rank=0, bits=8), min_compress_numel=1024, fused=True)
        _run(params, opt, range(3))  # the first step creates the state on the torch path
        assert opt._plan is not None and opt._plan.tile_rows == fused.matrix_tile(8) // opt._plan.block
        opt.apply_setting(S(rank=4, bits=8))
        _run(params, opt, range(3, 5))
        runs.append(params)
    assert fused.matrix_tile(8) == 512 and fused.matrix_tile(4) == fused.MATRIX_TILE
    assert fused.matrix_loads(8, False) == (True, 0) and fused.rows_per_program(256, 2, 8) == 4
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.default_tile
@pytest.mark.parametrize(
    ("iters", "sums"), [(1, "atomics"), (2, "atomics"), (1, "partials"), (2, "partials")]
)
def test_fused_factored_strips_match_torch_path(
    monkeypatch: pytest.MonkeyPatch, iters: int, sums: str
) -> None:
    """The factored second moment at the shipped tile: a column strip split over several programs, each
    walking ``FACTOR_ITERS`` tiles and adding its column sums once (with atomics, or into its own slots,
    ``fused.FACTOR_SUMS``; here 8-64 slot rows a sum, in first-level groups of 5), tracks the torch path."""
    monkeypatch.setattr(fused, "FACTOR_ITERS", iters)
    monkeypatch.setattr(fused, "FACTOR_SUMS", sums)
    monkeypatch.setattr(fused, "PARTIALS_GROUP", 5)
    # 3 steps: the torch path's first step creates the state, then two fused steps at the shipped tile (the
    # second reads the factored statistics the first wrote); each interpreted step costs seconds here
    steps = 3
    (pt, _), (pf, of) = _pair(S(rank=0, bits=4), stochastic_rounding=False, steps=steps, **FAC)
    assert of._plan is not None and of._plan.factored
    assert of._plan.partials == (4 * iters if sums == "partials" else 0)
    moved = steps * LR
    for a, b in zip(pt, pf):
        d = (a - b).detach().abs()
        assert float(d.mean()) < 2e-3 * moved, (tuple(a.shape), float(d.mean()))


def test_fused_bf16_params() -> None:
    (pt, _), (pf, of) = _pair(S(rank=0, bits=8), dtype=torch.bfloat16, stochastic_rounding=False)
    assert of._plan is not None and of._plan.matrix and of._plan.matrix[0].pdtype == torch.bfloat16
    for a, b in zip(pt, pf):
        assert a.dtype == torch.bfloat16
        assert float((a.float() - b.float()).detach().abs().mean()) < 0.05 * 4 * LR


def test_fused_skips_nonfinite_tensors_and_counts_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``SKIP_GRAIN = "tensor"`` (the torch path's rule) a NaN skips its whole tensor; the default
    per-tile rule: ``test_fused_tile_grain_skips_only_the_nonfinite_tile``."""
    monkeypatch.setattr(fused, "SKIP_GRAIN", "tensor")
    params = _params()
    opt = MangoAdamW(params, lr=LR, setting=S(rank=0, bits=8), min_compress_numel=1024, fused=True)
    _run(params, opt, range(2))
    before = [p.detach().clone() for p in params]
    grads = _grads(7, params)
    grads[0][3, 5] = float("nan")
    grads[3][0] = float("inf")
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()
    assert torch.equal(params[0], before[0]) and torch.equal(params[3], before[3])
    assert not torch.equal(params[1], before[1]) and not torch.equal(params[2], before[2])
    stats = opt.compression_stats()
    assert stats.skipped_steps == 2.0
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.as_dict().values())
    # the fused path advances a skipped tensor's counter with its launch (the host never waits for the flags)
    assert opt.state[params[0]]["step"] == 3


@pytest.mark.parametrize(
    ("setting", "kw"),
    [
        (S(rank=0, bits=8), {}),
        (S(rank=0, bits=4), {"factor_second_moment": False}),
        (S(rank=0, bits=8, gamma=0.5), {"stochastic_rounding": False}),
    ],
)
def test_fused_tile_grain_changes_nothing_on_finite_gradients(
    monkeypatch: pytest.MonkeyPatch, setting: S, kw: dict
) -> None:
    """``fused.SKIP_GRAIN = "tile"`` drops the pre-pass of a full-``v`` rank-0 launch; where every gradient is
    finite the parameters, the state and the statistics are those of the default, bit for bit."""
    runs = []
    for grain in ("tensor", "tile"):
        monkeypatch.setattr(fused, "SKIP_GRAIN", grain)
        params = _params()
        opt = MangoAdamW(params, lr=LR, setting=setting, min_compress_numel=1024, fused=True, seed=3, **kw)
        _run(params, opt, range(3))
        assert opt._plan is not None and opt._plan.matrix
        state = [v for p in params for v in opt.state[p].values() if isinstance(v, torch.Tensor)]
        runs.append(([p.detach().clone() for p in params], state, opt.compression_stats().as_dict(), opt))
    (pa, sa, da, oa), (pb, sb, db, ob) = runs
    assert len(sa) == len(sb) > 0
    for a, b in zip(pa + sa, pb + sb):
        assert torch.equal(a, b)
    assert da == pytest.approx(db, rel=1e-6)
    assert oa.skipped_updates() == ob.skipped_updates() == 0


@pytest.mark.default_tile  # the shipped tile (512 values at 8 bits), as compiled
def test_fused_tile_grain_skips_only_the_nonfinite_tile(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``SKIP_GRAIN = "tile"`` a NaN leaves its tile of ``matrix_tile(8)`` as it was and steps the
    rest of the tensor (the default leaves the whole tensor); an exact launch (a vector) still skips its
    whole tensor by the pre-pass. ``skipped_updates`` counts one tile and one tensor."""
    monkeypatch.setattr(fused, "SKIP_GRAIN", "tile")
    params = _params()
    opt = MangoAdamW(params, lr=LR, setting=S(rank=0, bits=8), min_compress_numel=1024, fused=True)
    _run(params, opt, range(2))
    before = [p.detach().clone() for p in params]
    slots = ("m", "v", "e")
    scales_before = {k: opt.state[params[0]][k].scale.clone() for k in slots}
    grads = _grads(7, params)
    grads[0][0, 0] = float("nan")  # the first tile of a wide (64, 256) matrix: a sampled program
    grads[3][0] = float("inf")
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()
    tile = fused.matrix_tile(8)
    flat, old = params[0].detach().reshape(-1), before[0].reshape(-1)
    assert params[0].numel() > tile
    assert torch.equal(flat[:tile], old[:tile])  # the NaN's tile, as it was
    assert bool((flat[tile:] != old[tile:]).all())  # every other value stepped
    assert bool(torch.isfinite(params[0]).all())
    for k in slots:  # the tile's blocks keep their scales, every scale is finite, the other blocks moved
        new_s, old_s = opt.state[params[0]][k].scale.reshape(-1), scales_before[k].reshape(-1)
        n = tile // opt.state[params[0]][k].block
        assert bool(torch.isfinite(new_s).all()), k
        assert torch.equal(new_s[:n], old_s[:n]), k
        assert not torch.equal(new_s[n:], old_s[n:]), k
    assert torch.equal(params[3], before[3])  # the vector's exact launch: the whole tensor, by the pre-pass
    assert not torch.equal(params[1], before[1]) and not torch.equal(params[2], before[2])
    assert opt.skipped_updates() == 2
    # the skipped tile stays out of the statistics: the other tiles' compression error and kurtosis remain
    # (a NaN in the sums zeroed both), and the tensor's norm is left out, as a skipped tensor's
    stats = opt.compression_stats()
    assert all(math.isfinite(v) for v in stats.as_dict().values())
    assert stats.compression_error > 0.0 and stats.grad_kurtosis != 0.0


def test_skip_grain_names_its_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fused, "SKIP_GRAIN", "row")
    params = _params()
    opt = MangoAdamW(params, lr=LR, setting=S(rank=0, bits=8), min_compress_numel=1024, fused=True)
    assert opt._factored() is False  # a full v: the grain is read
    with pytest.raises(ValueError, match=r"fused\.SKIP_GRAIN='row'; choose 'tensor' or 'tile'"):
        _run(params, opt, range(2))  # the first step builds the state; the second plans the launches


@pytest.mark.parametrize(
    ("setting", "kw"),
    [
        (S(rank=0, bits=8), {}),
        (S(rank=0, bits=4), FAC),  # factored v: the fold runs unchecked too
        (S(rank=0, bits=32), {}),  # the exact launch of every tensor
    ],
)
def test_fused_unchecked_step_equals_checked_on_finite_gradients(setting: S, kw: dict) -> None:
    """skip_nonfinite=False drops the pre-pass; on finite gradients the step and its statistics stay."""
    runs = []
    for check in (True, False):
        params = _params()
        opt = MangoAdamW(
            params, lr=LR, setting=setting, min_compress_numel=1024, fused=True, seed=3,
            skip_nonfinite=check, **kw,
        )  # fmt: skip
        _run(params, opt, range(3))
        assert opt._plan is not None and opt._plan.groups
        runs.append((params, opt.compression_stats()))
    (pc, sc), (pu, su) = runs
    for a, b in zip(pc, pu):
        if _device().type == "cuda":  # the factored v's column sums are atomics: their order varies, and
            d = (a - b).detach().abs()  # a last-bit difference can flip a rounding
            assert float(d.mean()) < 2e-3 * 3 * LR and float(d.max()) < 3 * LR, tuple(a.shape)
        else:  # the interpreter runs the programs in order: the same step bit for bit
            assert torch.equal(a, b), tuple(a.shape)
    assert su.grad_norm == pytest.approx(sc.grad_norm, rel=1e-5)
    assert su.compression_error == pytest.approx(sc.compression_error, rel=1e-3)
    assert su.skipped_steps == sc.skipped_steps == 0.0


def test_fused_unchecked_step_lets_nonfinite_gradients_through() -> None:
    params = _params()
    opt = MangoAdamW(
        params, lr=LR, setting=S(rank=0, bits=8), min_compress_numel=1024, fused=True, skip_nonfinite=False
    )
    _run(params, opt, range(2))
    before = params[0].detach().clone()
    grads = _grads(7, params)
    grads[0][3, 5] = float("nan")
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()
    assert not torch.equal(params[0], before)  # stepped, not skipped: nothing was checked
    assert opt.compression_stats().skipped_steps == 0.0


def test_skip_nonfinite_false_refuses_strict() -> None:
    with pytest.raises(ValueError, match="strict=True checks every gradient"):
        MangoAdamW(_params(), setting=S(rank=0, bits=8), strict=True, skip_nonfinite=False)
    with pytest.raises(TypeError, match="skip_nonfinite must be True or False"):
        MangoAdamW(_params(), setting=S(rank=0, bits=8), skip_nonfinite=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("use_fused", [False, True])
@pytest.mark.parametrize(("bits", "twin"), [(8, False), (4, False), (3, False), (2, True), (16, True)])
def test_auto_rounding_is_nearest_at_3_4_and_8_bits_only(
    bits: int, twin: bool, use_fused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``stochastic_rounding="auto"`` rounds the 3-, 4- and 8-bit codes to nearest and the other widths
    stochastically: the run equals the one with ``stochastic_rounding=twin`` bit for bit (one seed, the same
    draws) on the torch path and the fused one, and differs from the other choice. Any factored v's sums are
    added in a fixed order (``PARTIALS``): a GPU's atomics add them in a varying one, so two equal runs
    differ there."""
    _set_knobs(monkeypatch, PARTIALS)

    def run(sr: bool | str) -> list[torch.nn.Parameter]:
        params = _params()
        opt = MangoAdamW(
            params, lr=LR, setting=S(rank=0, bits=bits), min_compress_numel=1024, fused=use_fused, seed=3,
            stochastic_rounding=sr,  # type: ignore[arg-type]
        )  # fmt: skip
        _run(params, opt, range(3))
        return params

    auto = run("auto")
    assert all(torch.equal(a, b) for a, b in zip(auto, run(twin)))
    assert not all(torch.equal(a, b) for a, b in zip(auto, run(not twin)))


def test_auto_rounding_follows_setting_changes_and_resumes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``"auto"`` a change of width changes the rounding with it (r0/b8 -> r0/b2 -> r0/b8, the same
    run as one that switches ``stochastic_rounding`` by hand), and a checkpoint keeps ``"auto"``; any other
    value is refused by name. Fixed-order factored sums (``PARTIALS``), as above."""
    _set_knobs(monkeypatch, PARTIALS)

    def run(auto: bool) -> tuple[list[torch.nn.Parameter], MangoAdamW]:
        params = _params()
        opt = MangoAdamW(params, lr=LR, setting=S(rank=0, bits=8), min_compress_numel=1024, seed=3,
                         stochastic_rounding="auto" if auto else False)  # fmt: skip
        for k, bits in enumerate((8, 2, 8)):
            if not auto:  # the rounding of the width the states are converted to
                opt.stochastic_rounding = bits == 2
            opt.apply_setting(S(rank=0, bits=bits))
            _run(params, opt, range(2 * k, 2 * k + 2))
        return params, opt

    (pa, oa), (pb, _) = run(True), run(False)
    assert all(torch.equal(a, b) for a, b in zip(pa, pb))
    saved = oa.state_dict()
    opt2 = MangoAdamW(_params(), lr=LR, setting=S(rank=0, bits=8), min_compress_numel=1024)
    opt2.load_state_dict(saved)
    assert opt2.stochastic_rounding == "auto"
    with pytest.raises(TypeError, match="stochastic_rounding must be True, False or 'auto', got 'nearest'"):
        MangoAdamW(_params(), stochastic_rounding="nearest")  # type: ignore[arg-type]


def test_fused_state_dict_resumes_bit_for_bit() -> None:
    params = _params()
    opt = MangoAdamW(params, lr=LR, setting=S(rank=0, bits=8), min_compress_numel=1024, fused=True)
    _run(params, opt, range(3))
    saved_params = [p.detach().clone() for p in params]
    saved = copy.deepcopy(opt.state_dict())
    _run(params, opt, range(3, 6))
    params2 = [torch.nn.Parameter(p.clone()) for p in saved_params]
    opt2 = MangoAdamW(params2, lr=LR, setting=S(rank=0, bits=8), min_compress_numel=1024, fused=True)
    opt2.load_state_dict(saved)
    _run(params2, opt2, range(3, 6))
    for a, b in zip(params, params2):
        assert torch.equal(a, b)


def test_fused_follows_setting_changes() -> None:
    params = _params()
    opt = MangoAdamW(params, lr=LR, setting=S(rank=0, bits=8), min_compress_numel=1024, fused=True)
    _run(params, opt, range(2))
    plan8 = opt._plan
    opt.apply_setting(S(rank=0, bits=4))
    _run(params, opt, range(2, 4))
    assert opt._plan is not plan8 and opt._plan is not None and opt._plan.bits == 4
    opt.apply_setting(S(rank=8, bits=4))  # projected: every matrix fused
    _run(params, opt, range(4, 6))
    assert opt._plan is not None and sum(len(g.index) for g in opt._plan.projected) == 3
    assert not opt._plan.torch_items
    opt.apply_setting(S(rank=8, bits=3))  # 3 bits, v stored like m: every matrix fused
    _run(params, opt, range(6, 8))
    assert opt._plan is not None and sum(len(g.index) for g in opt._plan.projected) == 3
    assert not opt._plan.torch_items
    opt.apply_setting(S(rank=0, bits=8))
    _run(params, opt, range(6, 9))
    assert opt._plan is not None and sum(len(g.index) for g in opt._plan.matrix) == 3
    assert all(bool(torch.isfinite(p).all()) for p in params)
    assert opt.compression_stats().compression_error > 0


def test_fused_rank_increase_refreshes_in_the_batched_refresh() -> None:
    """After a rank increase the new random directions are replaced at the next step by the batched refresh
    (not tensor by tensor on the torch path): the same bases and parameters as the torch path's refresh."""
    runs = []
    for use_fused in (False, True):
        params = _params()
        opt = MangoAdamW(
            params, lr=LR, setting=S(rank=4, bits=8), min_compress_numel=1024, fused=use_fused, seed=3,
            stochastic_rounding=False,
        )  # fmt: skip
        _run(params, opt, range(3))  # the first step creates the state on the torch path
        opt._gen.manual_seed(7)  # the fused steps drew seeds from it: the same random new directions
        opt.apply_setting(S(rank=16, bits=8))
        assert all(opt.state[p].get("refresh_pending") for p in params[:3])
        _run(params, opt, range(3, 4))
        assert not any(opt.state[p].get("refresh_pending") for p in params[:3])
        runs.append((params, opt))
    (pt, ot), (pf, of) = runs
    assert of._plan is not None and not of._plan.torch_items
    assert sum(len(g.index) for g in of._plan.projected) == 3
    for a, b in zip(pt[:3], pf[:3]):
        assert ot.state[a]["basis_step"] == of.state[b]["basis_step"] == 4
        torch.testing.assert_close(ot.state[a]["P"], of.state[b]["P"], rtol=0, atol=1e-5)
    for a, b in zip(pt, pf):
        d = (a - b).detach().abs()
        assert float(d.mean()) < 2e-3 * 4 * LR and float(d.max()) < 0.1 * 4 * LR, tuple(a.shape)


def test_fused_off_and_strict_use_the_torch_path() -> None:
    for kw in ({"fused": False}, {"fused": True, "strict": True}):
        params = _params()
        opt = MangoAdamW(params, lr=LR, setting=S(rank=0, bits=8), min_compress_numel=1024, **kw)
        _run(params, opt, range(3))  # the first step creates the state on the torch path
        assert opt._plan is None, kw


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_identity_setting_runs_as_adamw(dtype: torch.dtype) -> None:
    """``off()`` (rank 0, 32 bits): the matrices join the exact launch with fp32 moments, none per tensor."""
    (pt, ot), (pf, of) = _pair(S.off(), dtype=dtype)
    plan = of._plan
    assert plan is not None and not plan.matrix and not plan.torch_items
    assert sum(len(g.index) for g in plan.exact) == 4 and plan.matrix_idx == [0, 1, 2]
    assert {g.sdtype for g in plan.exact} == (
        {torch.float32} if dtype == torch.float32 else {dtype, torch.float32}
    )
    for a, b in zip(pt, pf):
        assert a.dtype == dtype
        d = (a.float() - b.float()).detach().abs()
        bound = 1e-6 if dtype == torch.float32 else 0.02 * 4 * LR  # fp32: rounding only; bf16: a last bit
        assert float(d.mean()) < bound, (tuple(a.shape), float(d.mean()))
    for p in pf[:3]:  # the fp32 moments were updated in place (AdamW's first moment is never all zeros)
        assert of.state[p]["m"].dtype == torch.float32 and float(of.state[p]["m"].abs().sum()) > 0
    st, sf = ot.compression_stats(), of.compression_stats()
    assert sf.grad_norm == pytest.approx(st.grad_norm, rel=1e-5)
    assert sf.compression_error == st.compression_error == 0.0
    assert sf.spectral_tail == st.spectral_tail == 0.0
    assert ot.state_bytes() == of.state_bytes()


def test_fused_switch_to_off_flushes_the_error_buffer_then_fuses() -> None:
    """8 bits -> ``off()``: one torch-path step folds the leftover error buffer in, then the fused launch."""
    runs = []
    for use_fused in (False, True):
        params = _params()
        opt = MangoAdamW(
            params, lr=LR, setting=S(rank=0, bits=8), min_compress_numel=1024, fused=use_fused,
            stochastic_rounding=False, seed=3,
        )  # fmt: skip
        _run(params, opt, range(3))  # the first step creates the state on the torch path
        opt.apply_setting(S.off())
        assert all("e" in opt.state[p] for p in params[:3])
        _run(params, opt, range(3, 4))
        assert all("e" not in opt.state[p] for p in params[:3])
        if use_fused:
            assert opt._plan is not None and len(opt._plan.torch_items) == 3  # the flush step
        _run(params, opt, range(4, 6))
        if use_fused:
            assert opt._plan is not None and not opt._plan.torch_items and not opt._plan.matrix
        runs.append(params)
    moved = 6 * LR
    for a, b in zip(*runs):
        d = (a - b).detach().abs()
        assert float(d.mean()) < 2e-3 * moved and float(d.max()) < moved, (tuple(a.shape), float(d.max()))


GRID_CASES = [  # every width, ranks 0 / 4 / 8 / 16, gammas 0 to 1: (setting, kw, projected, fused matrices)
    (S(rank=8, bits=8), {}, 3, 3),
    (S(rank=8, bits=4), FAC, 2, 2),  # factored v: the 100-column tensor stays on the torch path
    (S(rank=4, bits=32), {}, 3, 3),
    (S(rank=8, bits=16), {}, 3, 3),
    (S(rank=8, bits=8, gamma=0.5), {}, 3, 3),
    (S(rank=16, bits=3, gamma=1.0), {}, 3, 3),
    (S(rank=8, bits=2, gamma=0.25), {**FAC, "error_feedback": False}, 2, 2),
    (S(rank=0, bits=8, gamma=0.5), {}, 0, 3),
    (S(rank=0, bits=4, gamma=1.0), {}, 0, 3),
    (S(rank=0, bits=3), FAC, 0, 2),
    (S(rank=0, bits=2), {}, 0, 3),
    (S(rank=0, bits=3), {}, 0, 3),
    (S(rank=0, bits=16, gamma=0.75), {}, 0, 3),
]


@pytest.mark.parametrize(
    ("setting", "kw", "n_proj", "n_fused"), GRID_CASES, ids=lambda x: getattr(x, "label", str)()
)
def test_fused_grid_matches_torch_path(setting: S, kw: dict, n_proj: int, n_fused: int) -> None:
    """Every width, the projection and the gamma shift run fused, value by value as the torch path (round to
    nearest; no basis refresh inside the run: a refresh rounds the rotated states once more, tested below)."""
    (pt, ot), (pf, of) = _pair(setting, stochastic_rounding=False, steps=4, refresh_every=100, **kw)
    plan = of._plan
    assert plan is not None
    assert sum(len(g.index) for g in plan.projected) == n_proj
    assert sum(len(g.index) for g in plan.matrix) == n_fused
    moved = 4 * LR
    for a, b in zip(pt, pf):
        d = (a - b).detach().abs()
        assert float(d.mean()) < 2e-3 * moved, (tuple(a.shape), float(d.mean()))
        assert float(d.max()) < 0.1 * moved, (tuple(a.shape), float(d.max()))
    for p_t, p_f in zip(pt[:3], pf[:3]):  # the stored states agree too
        st_t, st_f = ot.state[p_t], of.state[p_f]
        assert st_t.keys() == st_f.keys()
        for key in ("m", "e", "h"):
            if key in st_t:
                a = st_t[key] if isinstance(st_t[key], torch.Tensor) else st_t[key].dequantize(torch.float32)
                b = st_f[key] if isinstance(st_f[key], torch.Tensor) else st_f[key].dequantize(torch.float32)
                scale = float(a.abs().max()) + 1e-12
                assert float((a - b).abs().mean()) < 0.02 * scale, (key, tuple(p_t.shape))
    st, sf = ot.compression_stats(), of.compression_stats()
    assert sf.spectral_tail == pytest.approx(st.spectral_tail, rel=1e-3, abs=1e-6)
    assert sf.compression_error == pytest.approx(st.compression_error, rel=0.25, abs=1e-4)
    assert sf.grad_norm == pytest.approx(st.grad_norm, rel=1e-5)
    assert ot.state_bytes() == of.state_bytes()


def test_fused_refresh_is_batched_and_keeps_the_plan() -> None:
    """A basis refresh inside the fused run computes the torch path's basis and step (batched per shape, the
    kernel reads the rotated states in fp32), and the plan survives it."""
    (pt, ot), (pf, of) = _pair(S(rank=4, bits=32), steps=7, refresh_every=3)
    for p_t, p_f, a, b in zip(pt[:3], pf[:3], pt, pf):
        assert ot.state[p_t]["basis_step"] == of.state[p_f]["basis_step"] > 1
        assert torch.allclose(ot.state[p_t]["P"], of.state[p_f]["P"], atol=1e-5)
        assert float((a - b).detach().abs().max()) < 1e-6
    plan = of._plan
    assert plan is not None and sum(len(g.index) for g in plan.projected) == 3
    for setting in (S(rank=8, bits=8), S(rank=8, bits=4, gamma=0.5), S(rank=16, bits=16)):
        (pt, ot), (pf, of) = _pair(setting, steps=7, refresh_every=3, stochastic_rounding=False)
        assert of._plan is not None and of._plan.projected  # refreshes at steps 4 and 7 kept the plan
        assert all(of.state[p]["basis_step"] == 7 for p in pf[:2])
        for a, b in zip(pt, pf):
            d = (a - b).detach().abs()
            assert float(d.mean()) < 2e-3 * 7 * LR and float(d.max()) < 0.1 * 7 * LR, setting.label()


@pytest.mark.gpu
@pytest.mark.parametrize("setting", [S(rank=8, bits=8), S(rank=4, bits=4, gamma=0.5), S(rank=16, bits=32)])
def test_refresh_graph_replays_the_eager_refresh(setting: S) -> None:
    """On a GPU the refresh's tail is captured at the second refresh and replayed at the later ones: the same
    parameters, bases and states as the eager refresh (``graph_refresh = False``)."""
    if not torch.cuda.is_available():
        pytest.skip("CUDA graphs need a GPU")
    runs = []
    for graphed in (True, False):
        params = _params()
        opt = MangoAdamW(
            params, lr=LR, setting=setting, min_compress_numel=1024, fused=True, seed=3, refresh_every=3,
            stochastic_rounding=False,
        )  # fmt: skip
        opt.graph_refresh = graphed
        _run(params, opt, range(14))  # refreshes at steps 4, 7 (captured), 10, 13 (replayed)
        runs.append((params, opt))
    (pg, og), (pe, oe) = runs
    assert og._plan is not None and isinstance(og._plan.refresh_graph, RefreshGraph)
    assert oe._plan is not None and oe._plan.refresh_graph is None
    for a, b in zip(pg, pe):
        assert og.state[a].get("basis_step") == oe.state[b].get("basis_step")
        if "P" in og.state[a]:
            assert og.state[a]["basis_step"] == 13
            torch.testing.assert_close(og.state[a]["P"], oe.state[b]["P"], rtol=0, atol=1e-6)
        # a few ulps: the replayed products may pick other kernels than the eager ones (H200: 3e-8 at r4/b4)
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-5 * LR)


def test_fused_projected_skips_nonfinite_tensors() -> None:
    params = _params()
    opt = MangoAdamW(
        params, lr=LR, setting=S(rank=8, bits=8), min_compress_numel=1024, fused=True, refresh_every=2
    )
    _run(params, opt, range(2))
    before = [p.detach().clone() for p in params]
    basis = opt.state[params[0]]["P"].clone()
    grads = _grads(7, params)
    grads[0][3, 5] = float("nan")  # a refresh is due at this step: the bad tensor keeps its basis
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()
    assert opt._plan is not None and sum(len(g.index) for g in opt._plan.projected) == 3
    assert torch.equal(params[0], before[0]) and torch.equal(opt.state[params[0]]["P"], basis)
    assert not torch.equal(params[1], before[1])
    assert all(bool(torch.isfinite(p).all()) for p in params)
    assert opt.compression_stats().skipped_steps == 1.0


@pytest.mark.parametrize(
    ("setting", "min_rank", "grain", "marks"),
    [
        (S(rank=8, bits=8), 0, "tensor", False),
        (S(rank=8, bits=8), 1 << 30, "tensor", True),
        (S(rank=0, bits=8), 0, "tensor", True),
        (S(rank=0, bits=8), 0, "tile", False),
    ],
)
def test_the_whole_norm_vector_is_marked_only_where_a_pre_pass_filled_it(
    monkeypatch: pytest.MonkeyPatch, setting: S, min_rank: int, grain: str, marks: bool
) -> None:
    """A projected plan whose projection adds the norms marks its huge ones after the projection, not the
    whole vector before the launches (three ops a step fewer); with the pre-pass, or at rank 0 with the
    tensor grain, it does (under the tile grain a rank-0 tile tests itself)."""
    monkeypatch.setattr(fused, "PROJ_NORMS_MIN_RANK", min_rank)
    monkeypatch.setattr(fused, "SKIP_GRAIN", grain)
    params = _params()
    opt = MangoAdamW(params, lr=LR, setting=setting, min_compress_numel=1024, fused=True)
    _run(params, opt, range(2))
    plan = opt._plan
    assert plan is not None and plan.matrix_idx
    checked = {id(g): fused._checked(opt, g, plan) for g in plan.groups}
    assert fused._marks_before_launches(plan, checked) is marks


@pytest.mark.parametrize("reload_below", [0, 1 << 30], ids=["squared-tile", "second-load"])
def test_projection_adds_the_norms_the_pre_pass_would(
    monkeypatch: pytest.MonkeyPatch, reload_below: int
) -> None:
    """``PROJ_NORMS_MIN_RANK``: the projection adds each projected tensor's ``||G||^2`` as it reads the
    gradient, in place of the pre-pass, squaring the tile the product reads or (``PROJ_NORMS_RELOAD_BELOW``)
    a second load of it. Same parameters, skips and statistics either way, at a step where one tensor's
    gradient holds a NaN (its samples are zeroed once its norm is whole) and another a huge finite value (its
    norm marked once whole), and around it."""
    monkeypatch.setattr(fused, "PROJ_NORMS_RELOAD_BELOW", reload_below)
    runs = []
    for by_projection in (False, True):
        monkeypatch.setattr(fused, "PROJ_NORMS_MIN_RANK", 0 if by_projection else 1 << 30)
        params = _params()
        opt = MangoAdamW(
            params, lr=LR, setting=S(rank=8, bits=8), min_compress_numel=1024, fused=True, seed=3
        )
        _run(params, opt, range(2))
        stats = [opt.compression_stats()]
        grads = _grads(7, params)
        grads[1][3, 5] = float("nan")
        grads[0][7, 3] = 1e16  # ||g||^2 numel >= 2^120 with ||g||^2 finite: skipped, as the torch path does
        for p, g in zip(params, grads):
            p.grad = g
        before = params[0].detach().clone()
        opt.step()
        assert torch.equal(params[0], before)
        stats.append(opt.compression_stats())
        _run(params, opt, range(8, 10))
        stats.append(opt.compression_stats())
        assert opt._plan is not None and sum(len(g.index) for g in opt._plan.projected) == 3
        runs.append(([p.detach().clone() for p in params], stats))
    (p_pre, s_pre), (p_proj, s_proj) = runs
    for a, b in zip(p_pre, p_proj):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6 * LR)
    for a, b in zip(s_pre, s_proj):
        assert a.skipped_steps == b.skipped_steps
        for name in ("grad_norm", "grad_kurtosis", "spectral_tail", "compression_error"):
            assert math.isclose(getattr(a, name), getattr(b, name), rel_tol=1e-4, abs_tol=1e-7), name
    assert s_proj[1].skipped_steps == 2 and s_proj[1].grad_norm > 0 and s_proj[1].grad_kurtosis != 0


@pytest.mark.parametrize("setting", [S(rank=8, bits=8), S(rank=0, bits=4, gamma=0.5)])
def test_alignment_promise_follows_the_addresses(setting: S) -> None:
    """``PROJ_ALIGN`` / ``MATRIX_ALIGN``: the projection and rank-0 matrix kernels are told that addresses
    are 16-byte aligned (and ``m``, ``n`` multiples of 4) only when they are. Gradients that are views at an
    odd offset of one buffer run without the promise, to the same parameters as separate gradients; a
    tensor with ``n = 102`` never gets the projection's."""
    runs = []
    for offset in (None, 1):
        params = _params()
        opt = MangoAdamW(params, lr=LR, setting=setting, min_compress_numel=1024, fused=True, seed=3)
        promised = []
        for k in range(3):
            grads = _grads(k, params)
            if offset is not None:  # one flat buffer, every gradient 4 bytes off a 16-byte boundary
                flat = torch.zeros(offset + sum(g.numel() for g in grads), device=grads[0].device)
                pos = offset
                for i, g in enumerate(grads):
                    grads[i] = flat[pos : pos + g.numel()].view_as(g).copy_(g)
                    pos += g.numel()  # each numel a multiple of 4: every view 4 bytes off
            for p, g in zip(params, grads):
                p.grad = g
            opt.step()
            assert opt._plan is not None
            if setting.rank:
                promised += [fused._proj_align(grp) for grp in opt._plan.projected]
            else:
                promised += [fused._matrix_align(grp, False, False) for grp in opt._plan.groups if grp.matrix]
        assert promised and all(promised) == (offset is None) and any(promised) == (offset is None)
        runs.append([p.detach().clone() for p in params])
    for a, b in zip(*runs):  # the refresh's torch products on views may round apart
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * LR)
    if not setting.rank:
        return
    odd = [torch.nn.Parameter(torch.randn(48, 102, device=_device()) * 0.1)]
    opt = MangoAdamW(odd, lr=LR, setting=S(rank=8, bits=8), min_compress_numel=1024, fused=True)
    for _ in range(3):
        odd[0].grad = torch.randn_like(odd[0]) * 0.01
        opt.step()
    assert opt._plan is not None and opt._plan.projected
    assert not any(fused._proj_align(grp) for grp in opt._plan.projected)


@pytest.mark.parametrize("setting", [S(rank=0, bits=4), S(rank=0, bits=4, gamma=1.0), S(rank=8, bits=4)])
def test_four_bit_pairs_decode_the_same_codes(monkeypatch: pytest.MonkeyPatch, setting: S) -> None:
    """``FOUR_BIT_PAIRS``: loading each 4-bit code byte once and splitting it in registers decodes the same
    codes as loading each value's byte: parameters and every state equal, value for value."""
    runs = []
    for pairs in (False, True):
        monkeypatch.setattr(fused, "FOUR_BIT_PAIRS", pairs)
        params = _params()
        opt = MangoAdamW(params, lr=LR, setting=setting, min_compress_numel=1024, fused=True, seed=3)
        _run(params, opt, range(4))
        states = [{k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)} for p in params]
        runs.append(([p.detach().clone() for p in params], states))
    (p0, s0), (p1, s1) = runs
    for a, b in zip(p0, p1):
        assert torch.equal(a, b)
    for a, b in zip(s0, s1):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("grain", ["tensor", "tile"])
@pytest.mark.parametrize("setting", [S(rank=0, bits=8), S(rank=8, bits=4), S(rank=0, bits=16, gamma=0.5)])
def test_fused_skips_huge_finite_gradients(monkeypatch: pytest.MonkeyPatch, setting: S, grain: str) -> None:
    """A finite gradient entry of 1e25 (its square overflows fp32) skips its tensor, as the torch path does,
    or under ``SKIP_GRAIN = "tile"`` at rank 0 with a full ``v`` only its tile: parameters and states stay
    finite, the other tensors (and tiles) step."""
    monkeypatch.setattr(fused, "SKIP_GRAIN", grain)
    params = _params()
    opt = MangoAdamW(params, lr=LR, setting=setting, min_compress_numel=1024, fused=True)
    _run(params, opt, range(2))
    before = [p.detach().clone() for p in params]
    grads = _grads(5, params)
    grads[1][7, 3] = 1e25
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()
    assert opt._plan is not None and 1 in opt._plan.matrix_idx
    if grain == "tile" and setting.rank == 0:  # the entry's tile keeps its values, the rest steps
        assert float(params[1][7, 3]) == float(before[1][7, 3])
        assert not torch.equal(params[1], before[1])
    else:
        assert torch.equal(params[1], before[1])
    assert not torch.equal(params[0], before[0])
    assert all(bool(torch.isfinite(p).all()) for p in params)
    assert opt.compression_stats().skipped_steps == 1.0
    _run(params, opt, range(6, 8))
    assert all(bool(torch.isfinite(p).all()) for p in params)


@pytest.mark.parametrize("setting", [S(rank=0, bits=8), S(rank=0, bits=4)])
def test_fused_whole_block_launch_changes_nothing(setting: S) -> None:
    """Whole-block programs run in their own unmasked launch (vector loads and stores); with the split off,
    or with gradients 4 bytes off a 16-byte boundary, the step is the same bit for bit. (Full ``v`` at 4
    bits: the factored statistics add up with float atomics, whose order a GPU does not fix.)"""

    def run(whole: bool, shift_grads: bool) -> list[torch.Tensor]:
        old = fused.WHOLE_BLOCKS
        fused.WHOLE_BLOCKS = whole
        try:
            params = _params()
            opt = MangoAdamW(
                params, lr=LR, setting=setting, min_compress_numel=1024, fused=True, seed=3,
                factor_second_moment=False,
            )  # fmt: skip
            for k in range(3):
                for p, g in zip(params, _grads(k, params)):
                    if shift_grads:  # the same values, one float past a 16-byte boundary
                        buf = torch.empty(g.numel() + 1, dtype=g.dtype, device=g.device)
                        buf[1:].copy_(g.reshape(-1))
                        g = buf[1:].view(g.shape)
                    p.grad = g
                opt.step()
            plan = opt._plan
            assert plan is not None and plan.matrix, "the fused path did not run"
            grp = plan.matrix[0]
            assert 0 < grp.n_full <= grp.n_prog
            if setting.bits == 8:  # (48, 100) ends in a partial block (4800 % 256 != 0): launched apart
                assert grp.n_full < grp.n_prog
        finally:
            fused.WHOLE_BLOCKS = old
        return [p.detach().clone() for p in params]

    ref = run(True, False)
    for whole, shift in ((False, False), (True, True)):
        for a, b in zip(ref, run(whole, shift)):
            assert torch.equal(a, b)


@pytest.mark.tf32
@pytest.mark.parametrize("setting", [S(rank=8, bits=8), S(rank=8, bits=4, gamma=0.5), S(rank=8, bits=16)])
def test_fused_tf32_products_track_the_torch_path(setting: S) -> None:
    """The shipped products at 2-16 bits take one tf32 pass (on a GPU; the interpreter computes fp32): the
    parameters stay within the rounding of the setting's codes of the torch path's, not value by value."""
    (pt, _), (pf, of) = _pair(setting, steps=7, refresh_every=3, stochastic_rounding=False)
    assert of._plan is not None and of._plan.projected and fused.QUANTIZED_DOT_PRECISION == "tf32"
    moved = 7 * LR
    for a, b in zip(pt, pf):
        d = (a - b).detach().abs()
        assert float(d.mean()) < 2e-2 * moved and float(d.max()) < 0.5 * moved, (
            tuple(a.shape),
            float(d.mean()),
        )


def _programs_per_tensor(dims: list[tuple[int, int]], factored: bool, block: int, per: int) -> torch.Tensor:
    """The matrix launch's program table built tensor by tensor (the construction before session 9)."""
    progs, whole = [], []
    for t, (nrows, ncols) in enumerate(dims):
        numel = nrows * ncols
        if factored:
            stride = ncols // block
            a0 = torch.arange(0, nrows, per)
            first = (a0[None, :] * stride + torch.arange(stride)[:, None]).reshape(-1)
            count = (nrows - a0).clamp(max=per).repeat(stride)
        else:
            n_blocks = max(-(-numel // block), 1)
            first = torch.arange(0, n_blocks, per)
            count = (n_blocks - first).clamp(max=per)
        progs.append(torch.stack([torch.full_like(first, t), first, count], dim=1))
        whole.append((first + count) * block <= numel)
    full = torch.cat(whole)
    return torch.cat(progs)[torch.cat([torch.nonzero(full).view(-1), torch.nonzero(~full).view(-1)])]


def _random_table_case(
    rng: random.Random,
) -> tuple[int, int, bool, list[tuple[int, int]], list[int], list[int]]:
    """A random matrix launch's geometry: block, rows a program, factored, the tensors' ``(rows, cols)``, and
    the block rows and strides :func:`fused._matrix_programs` takes for them."""
    block, per, factored = rng.choice([32, 64, 256]), rng.choice([1, 2, 4, 32]), rng.random() < 0.5
    dims = [
        (rng.randint(1, 300), block * rng.randint(1, 12) if factored else rng.randint(1, 900))
        for _ in range(rng.randint(1, 6))
    ]
    rows = [r if factored else max(-(-(r * c) // block), 1) for r, c in dims]
    strides = [c // block if factored else 1 for _, c in dims]
    return block, per, factored, dims, rows, strides


def test_strip_programs_equal_the_per_tensor_tables() -> None:
    """The program tables built for all tensors at once are the per-tensor construction's, row for row."""
    rng = random.Random(0)
    for _ in range(200):
        block, per, factored, dims, rows, strides = _random_table_case(rng)
        got, n_full = fused._matrix_programs(rows, strides, [r * c for r, c in dims], block, per)
        want = _programs_per_tensor(dims, factored, block, per)
        assert torch.equal(got, want.to(torch.int32)), (dims, factored, block, per)
        assert n_full == int(
            ((want[:, 1] + want[:, 2]) * block <= torch.tensor([r * c for r, c in dims])[want[:, 0]]).sum()
        )


@pytest.mark.gpu
def test_program_tables_built_on_the_gpu_equal_the_host_ones() -> None:
    """The launch tables are built on the parameters' device (no host pass in a plan rebuild): there they
    are the host construction's, row for row, with the same count of whole-block programs."""
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    rng = random.Random(1)
    cuda = torch.device("cuda")
    for _ in range(50):
        block, per, _, dims, rows, strides = _random_table_case(rng)
        numels = [r * c for r, c in dims]
        host, n_host = fused._matrix_programs(rows, strides, numels, block, per)
        dev, n_dev = fused._matrix_programs(rows, strides, numels, block, per, cuda)
        assert dev.device.type == "cuda" and torch.equal(dev.cpu(), host) and n_dev == n_host, dims
    params = [torch.zeros(n, device=cuda) for n in (1, 700, 4096, 5000)]
    want = fused._tiles([p.cpu() for p in params], fused.NORM_TILE)
    assert torch.equal(fused._tiles(params, fused.NORM_TILE).cpu(), want)


@pytest.mark.parametrize(
    ("setting", "kw"),
    [
        (S(rank=0, bits=8), {}),
        (S(rank=0, bits=8, gamma=0.5), {}),
        (S(rank=0, bits=8), {"error_feedback": False, "stochastic_rounding": False}),
        (S(rank=0, bits=4), {}),
        (S(rank=0, bits=16, gamma=0.5), {}),
        (S(rank=8, bits=8, gamma=0.5), {"refresh_every": 2}),
    ],
)
def test_fused_early_loads_change_nothing(monkeypatch: pytest.MonkeyPatch, setting: S, kw: dict) -> None:
    """Issuing a tile's loads before its arithmetic (``fused.EARLY_LOADS``) moves only the loads: on the CPU
    the same parameters and states bit for bit, at the width that ships it (8 bits: with and without the
    shift, the error buffer and stochastic rounding), packed 4-bit codes, bf16 slots, a projection and a
    refresh (the fetch and unpack code of every width also runs in the default order, in the tests above).
    A GPU compiler may contract the same arithmetic into FMAs differently (last-bit differences on the
    H200, BENCHMARKS.md): there the parameters agree to 1e-6, with the full ``v`` (the factored
    ``v``'s float atomics add in any order)."""
    cuda = torch.cuda.is_available()
    if cuda:
        kw = {**kw, "factor_second_moment": False}

    def run(early: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        key = (setting.bits, setting.gamma > 0)
        monkeypatch.setattr(fused, "EARLY_LOADS", {key: 0} if early else {})
        params = _params()
        opt = MangoAdamW(params, lr=LR, setting=setting, min_compress_numel=1024, fused=True, seed=3, **kw)
        _run(params, opt, range(4))
        assert opt._plan is not None and opt._plan.matrix, "the fused path did not run"
        states = [v for st in opt.state_dict()["state"].values() for v in st.values() if torch.is_tensor(v)]
        return [p.detach().clone() for p in params], states

    (p0, s0), (p1, s1) = run(False), run(True)
    assert len(s0) == len(s1) > 0
    if cuda:
        for a, b in zip(p0, p1):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    else:
        for a, b in zip(p0 + s0, p1 + s1):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_matrix_loads_picks_the_order_and_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one place fused.run and benchmarks.sass take the load order and register cap from: a width's
    own tile (``MATRIX_TILE_BY_BITS``) brings its own cap, ``MAX_REGS`` overrides every cap."""
    monkeypatch.setattr(fused, "EARLY_LOADS", {(8, False): 96})
    monkeypatch.setattr(fused, "MAX_REGS_BY_BITS", {8: 72})
    monkeypatch.setattr(fused, "MATRIX_TILE_BY_BITS", {})
    assert fused.matrix_loads(8, False) == (True, 96)
    assert fused.matrix_loads(8, False, early=False) == (False, 72)  # forced late: the width's cap
    assert fused.matrix_loads(8, True) == (False, 72)  # the shift is not in the table
    assert fused.matrix_loads(4, False) == (False, 0)  # no cap
    monkeypatch.setattr(fused, "MATRIX_TILE_BY_BITS", {8: (512, 0), 4: (1024, 80)})
    assert fused.matrix_loads(8, False) == (True, 0)  # the tile's cap: none
    assert fused.matrix_loads(4, False) == (False, 80)
    monkeypatch.setattr(fused, "MAX_REGS", 128)
    assert fused.matrix_loads(8, False) == (True, 128)


@pytest.mark.parametrize("draws", ["philox", "hash", "philox8", "hash8"])
@pytest.mark.parametrize("setting", [S(rank=0, bits=8), S(rank=0, bits=8, gamma=0.5)], ids=["g0", "g0.5"])
def test_fused_stochastic_rounding_draws_track_torch_path(
    monkeypatch: pytest.MonkeyPatch, draws: str, setting: S
) -> None:
    """Every source of stochastic rounding's words and width of its dithers (``fused.DRAWS``) keeps the fused
    step on the torch path's average at 8 bits, with and without the shift's fifth stream."""
    monkeypatch.setattr(fused, "DRAWS", draws)
    (pt, _), (pf, _) = _pair(setting, stochastic_rounding=True, steps=6)
    for a, b in zip(pt[:3], pf[:3]):
        assert float((a - b).detach().abs().mean()) < 0.05 * 6 * LR


def test_fused_draws_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fused, "DRAWS", "mt19937")
    params = _params()
    opt = MangoAdamW(params, lr=LR, setting=S(rank=0, bits=8), min_compress_numel=1024, fused=True)
    with pytest.raises(
        ValueError, match=r"fused\.DRAWS='mt19937'; choose one of 'philox', 'hash', 'philox8'"
    ):
        _run(params, opt, range(3))  # the first step creates the state on the torch path


@pytest.mark.parametrize(
    ("setting", "kw"),
    [
        (S(rank=0, bits=4), FAC),
        (S(rank=0, bits=4), {**FAC, "skip_nonfinite": False}),  # the fold runs unchecked
        (S(rank=0, bits=2), FAC),  # strips of several tiles a program (fused.FACTOR_ITERS_BY_BITS)
        (S(rank=0, bits=8), FAC),  # 256-blocks: one strip a row
        (S(rank=8, bits=4, gamma=0.5), {**FAC, "refresh_every": 2}),  # projected, a refresh inside the run
    ],
    ids=["r0-b4", "r0-b4-unchecked", "r0-b2-strips", "r0-b8-factored", "r8-b4-g0.5-refresh"],
)
def test_fused_partial_sums_match_the_atomics(monkeypatch: pytest.MonkeyPatch, setting: S, kw: dict) -> None:
    """``fused.FACTOR_SUMS = "partials"`` adds the atomics' sums of ``c^2`` in another order (the
    programs' own slots, in first-level groups of 3 here): the factored statistics agree to float rounding
    and so do the parameters on the CPU (round to nearest; the statistics feed ``sqrt(v)`` only, which no
    code holds). On a GPU the two kernels are compiled apart and the atomics add in any order: a last-bit
    difference may flip a rounding there, so the parameters take the torch-path tests' bound."""
    monkeypatch.setattr(fused, "PARTIALS_GROUP", 3)

    def run(sums: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        monkeypatch.setattr(fused, "FACTOR_SUMS", sums)
        params = _params()
        opt = MangoAdamW(
            params, lr=LR, setting=setting, min_compress_numel=1024, fused=True, seed=3,
            stochastic_rounding=False, **kw,
        )  # fmt: skip
        _run(params, opt, range(4))
        plan = opt._plan
        assert plan is not None and plan.factored and plan.matrix
        assert all((g.sums is not None) == (sums == "partials") for g in plan.matrix)
        stats = [opt.state[p][k].clone() for p in params for k in ("v_row", "v_col") if k in opt.state[p]]
        return [p.detach().clone() for p in params], stats

    (pa, sa), (pp, sp) = run("atomics"), run("partials")
    assert len(sa) == len(sp) > 0
    for a, b in zip(sa, sp):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=0)
    for a, b in zip(pa, pp):
        if _device().type == "cuda":
            d = (a - b).detach().abs()
            assert float(d.mean()) < 2e-3 * 4 * LR and float(d.max()) < 4 * LR, tuple(a.shape)
        else:
            torch.testing.assert_close(b, a, rtol=0, atol=1e-5 * LR)


def test_fused_partial_sums_skip_nonfinite_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tensor skipped for a non-finite gradient writes no slot and keeps its factored statistics (its slots
    still hold the last step's sums); the others fold theirs in."""
    monkeypatch.setattr(fused, "FACTOR_SUMS", "partials")
    monkeypatch.setattr(fused, "PARTIALS_GROUP", 3)
    params = _params()
    opt = MangoAdamW(params, lr=LR, setting=S(rank=0, bits=4), min_compress_numel=1024, fused=True, **FAC)
    _run(params, opt, range(3))
    assert opt._plan is not None and opt._plan.partials
    keys = ("v_row", "v_col")
    before = [[p.detach().clone()] + [opt.state[p][k].clone() for k in keys] for p in params[:2]]
    grads = _grads(7, params)
    grads[1][3, 5] = float("nan")
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()
    after = [[p.detach()] + [opt.state[p][k] for k in keys] for p in params[:2]]
    assert all(torch.equal(a, b) for a, b in zip(before[1], after[1]))
    assert not any(torch.equal(a, b) for a, b in zip(before[0], after[0]))
    assert opt.compression_stats().skipped_steps == 1.0
    _run(params, opt, range(8, 10))
    assert all(
        bool(torch.isfinite(x).all()) for p in params[:3] for x in [p, *(opt.state[p][k] for k in keys)]
    )


@pytest.mark.parametrize(("group", "check"), [(4, True), (64, True), (4, False)])
def test_partial_sums_kernel_adds_every_slot(group: int, check: bool) -> None:
    """The partial-sum launches alone, on jobs of 1 to 70 slot rows and 1 to 300 entries, in both layouts
    (a slot row after another, or an entry's slots side by side), every other one of a tensor whose norm is
    inf: each statistic becomes ``beta2 v + (1 - beta2) sum / across`` of its job's slots, the skipped
    tensor's stays unless the fold runs unchecked."""
    from client.compression.kernels import triton_step as ts

    device = _device()
    gen = torch.Generator().manual_seed(1)
    shapes = [(1, 1), (3, 300), (5, 64), (8, 65), (70, 7), (64, 129)]
    # [P, N] slots, stored as they are (even jobs) or as their transpose (odd jobs)
    slots = [torch.rand(p, n, generator=gen).to(device) for p, n in shapes]
    stored = [x if t % 2 == 0 else x.t().contiguous() for t, x in enumerate(slots)]
    stats = [torch.rand(n, generator=gen).to(device) for _, n in shapes]
    want = [v.clone() for v in stats]
    across = [3, 1, 7, 2, 5, 11]
    norms = torch.tensor([1.0, float("inf")], device=device)
    meta = torch.tensor([[0, 0, 0, 0, 0], [0, 0, 0, 0, 1]], dtype=torch.int64, device=device)
    jobs = []
    for t, (s, x, v, a) in enumerate(zip(slots, stored, stats, across)):
        p, n = s.shape
        strides = (n, 1) if t % 2 == 0 else (1, p)
        jobs += [x.data_ptr(), p, n, *strides, v.data_ptr(), a, (t // 2) % 2]
        if (t // 2) % 2 == 0 or not check:
            want[t] = v * 0.9 + (1.0 - 0.9) * (s.double().sum(0).float() / a)
    old = fused.PARTIALS_GROUP, fused.PARTIALS_COLS
    fused.PARTIALS_GROUP, fused.PARTIALS_COLS = group, 64
    try:
        sums = fused._sum_tables(jobs, device)
    finally:
        fused.PARTIALS_GROUP, fused.PARTIALS_COLS = old
    assert (sums.group, sums.cols) == (group, 64)
    assert sums.folds.shape[0] == sum(-(-n // 64) for _, n in shapes)
    assert sums.groups.shape[0] == sum(-(-n // 64) * -(-p // group) for p, n in shapes if p > group)
    for prog, fold in ((sums.groups, False), (sums.folds, True)):
        if prog.shape[0]:
            ts.partial_sums_kernel[(prog.shape[0],)](
                prog, sums.jobs, meta, norms, 0.9, FOLD=fold, GROUP=group, COLS=64, CHECK=check
            )
    for t, (v, w) in enumerate(zip(stats, want)):
        torch.testing.assert_close(v, w, rtol=1e-6, atol=0, msg=f"job {t}")


@pytest.mark.parametrize(
    ("knob", "value", "message"),
    [
        ("FACTOR_SUMS", "tree", r"fused\.FACTOR_SUMS='tree'; choose 'atomics' or 'partials'"),
        ("NF4_SEARCH", "bisect", r"fused\.NF4_SEARCH='bisect'; choose one of 'compare', 'cells'"),
    ],
)
def test_fused_knobs_are_checked(
    monkeypatch: pytest.MonkeyPatch, knob: str, value: str, message: str
) -> None:
    monkeypatch.setattr(fused, knob, value)
    params = _params()
    opt = MangoAdamW(
        params, lr=LR, setting=S(rank=0, bits=4), min_compress_numel=1024, fused=True, **FAC, **NF4
    )  # the factored v reads FACTOR_SUMS, the NF4 codes NF4_SEARCH
    with pytest.raises(ValueError, match=message):
        _run(params, opt, range(3))  # the first step creates the state on the torch path


@pytest.mark.parametrize(
    ("setting", "kw"),
    [
        (S(rank=0, bits=4), {**NF4, "stochastic_rounding": True}),
        (S(rank=0, bits=4), {**NF4, "stochastic_rounding": False}),
        (S(rank=0, bits=4), {**NF4, "stochastic_rounding": True, "error_feedback": False}),
        (S(rank=0, bits=4, gamma=1.0), {**NF4, "stochastic_rounding": True}),
    ],
    ids=["stochastic", "nearest", "stochastic-no-ef", "g1"],
)
def test_fused_nf4_search_changes_nothing(monkeypatch: pytest.MonkeyPatch, setting: S, kw: dict) -> None:
    """``fused.NF4_SEARCH``: the search of cells finds the codes a comparison with every level (or the
    midpoints' select tree) finds, so both steps, with the same draws, leave the same parameters and state
    bit for bit. With a full ``v``: the factored ``v``'s column sums are atomics on a GPU, whose order varies
    from run to run, so two runs of one variant can differ in a last bit there (call 36 on an H100 failed
    this test with the factored default, where the tests that allow for those atomics passed)."""

    def run(search: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        monkeypatch.setattr(fused, "NF4_SEARCH", search)
        params = _params()
        opt = MangoAdamW(
            params, lr=LR, setting=setting, min_compress_numel=1024, fused=True, seed=3,
            factor_second_moment=False, **kw,
        )  # fmt: skip
        _run(params, opt, range(3))
        assert opt._plan is not None and opt._plan.matrix
        state = [v for p in params for v in opt.state[p].values() if isinstance(v, torch.Tensor)]
        return [p.detach().clone() for p in params], state

    (pc, sc), (pn, sn) = run("cells"), run("compare")
    assert len(sc) == len(sn) > 0
    for a, b in zip(pc + sc, pn + sn):
        assert torch.equal(a, b)


def test_variants_part_times_the_partial_sums() -> None:
    """``mango bench gpu --parts variants`` has rows for ``FACTOR_SUMS = "partials"`` beside their atomics
    baselines (same setting, no knob), and every knob a row sets is one of the fused module's."""
    gpu = pytest.importorskip("benchmarks.gpu")
    rows = [(label, kw, knobs) for label, kw, knobs in gpu.VARIANTS if knobs.get("FACTOR_SUMS") == "partials"]
    assert {label for label, _, _ in rows} >= {"r0/b4/g0", "r8/b4/g0"}
    for label, kw, _ in rows:
        assert (label, kw, {}) in gpu.VARIANTS, label
    assert all(hasattr(fused, k) for _, _, knobs in gpu.VARIANTS for k in knobs)


@pytest.mark.parametrize("setting", [S(rank=0, bits=8), S(rank=4, bits=4, gamma=0.5)])
def test_last_grad_norm_is_the_gradients_norm_on_both_paths(setting: S) -> None:
    """``MangoAdamW.last_grad_norm`` (what the hook samples, with no pass of its own over the gradients) is
    the global norm of the gradients the last step read, from the fused path's pre-pass and the torch path's
    norms alike, and stays valid after ``zero_grad``."""
    for use_fused in (True, False):
        params = _params()
        opt = MangoAdamW(params, lr=LR, setting=setting, min_compress_numel=1024, fused=use_fused)
        assert opt.last_grad_norm() is None
        for k in range(3):
            for p, g in zip(params, _grads(k, params)):
                p.grad = g
            opt.step()
            want = global_grad_norm(params)
            opt.zero_grad(set_to_none=True)
            got = opt.last_grad_norm()
            assert got is not None and want is not None
            assert float(got) == pytest.approx(float(want), rel=1e-5), (use_fused, k)


def test_last_grad_norm_leaves_out_a_skipped_tensor() -> None:
    """A tensor whose gradient is not finite is skipped by the step, and left out of its norm (both paths)."""
    for use_fused in (True, False):
        params = _params()
        opt = MangoAdamW(params, lr=LR, setting=S(rank=0, bits=8), min_compress_numel=1024, fused=use_fused)
        _run(params, opt, range(2))
        grads = _grads(5, params)
        grads[1][0] = float("nan")
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        got = opt.last_grad_norm()
        want = torch.linalg.vector_norm(torch.stack([g.norm() for i, g in enumerate(grads) if i != 1]))
        assert got is not None and float(got) == pytest.approx(float(want), rel=1e-5), use_fused


@pytest.mark.parametrize(
    ("start", "to"),
    [
        ("r64/b16/g0", "r0/b4/g1"),
        ("r0/b32/g0", "r16/b3/g0.75"),
        ("r0/b32/g0", "r8/b8/g0"),
        ("r4/b8/g0", "r0/b8/g0.5"),
    ],
)
def test_first_step_after_a_change_into_new_buffers_is_fused(start: str, to: str) -> None:
    """A change into a setting that needs a buffer the old one had not (the error buffer after 32 bits, the
    shift's reference after gamma = 0) stores it as zeros: the next step takes the fused launches for every
    matrix (it ran them on the torch path, tens of milliseconds of launches on a GPU); on the torch path the
    zeros step bit for bit as no buffer did, and the fused steps track the torch path's (round to nearest)."""
    runs = []
    for fused_step, drop in ((True, False), (False, False), (False, True)):
        params = _params()
        opt = MangoAdamW(
            params, lr=LR, setting=S.parse(start), min_compress_numel=1024, fused=fused_step, seed=5,
            stochastic_rounding=False, refresh_every=100,
        )  # fmt: skip
        _run(params, opt, range(3))
        had = {id(st): {k for k in ("e", "h") if k in st} for st in opt.state.values()}
        opt.apply_setting(S.parse(to))
        for st in opt.state.values():
            if st.get("kind") == "matrix":
                assert "e" in st and ("h" in st) == (S.parse(to).gamma > 0)
                if drop:  # what a change stored before: no new buffer, which the torch path reads as zeros
                    for k in {"e", "h"} - had[id(st)]:
                        st.pop(k, None)
        _run(params, opt, range(3, 4))
        if fused_step:
            assert opt._plan is not None and opt._plan.torch_items == [], opt._plan.torch_items
        runs.append(params)
    for a, b in zip(runs[1], runs[2], strict=True):
        assert torch.equal(a, b)  # zeros stored == no buffer, on the torch path
    moved = 4 * LR
    for a, b in zip(runs[0], runs[1], strict=True):  # the fused steps track the torch path's
        d = (a - b).detach().abs()
        assert float(d.mean()) < 2e-3 * moved and float(d.max()) < 0.1 * moved, (
            tuple(a.shape),
            float(d.max()),
        )


def test_refresh_in_chunks_matches_one_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    """``refresh.REFRESH_STACK_BYTES`` bounds the gradient stack of a batched refresh (its transient
    memory): chunked to one tensor a product, the refresh computes the same bases and steps as one stack."""
    states = [{"shape": (64, 256), "rank": 4}] * 3 + [{"shape": (48, 100), "rank": 4}]
    assert refresh_mod._subgroups(states) == [(4, [0, 1, 2]), (4, [3])]
    runs = []
    for limit in (refresh_mod.REFRESH_STACK_BYTES, 1):
        monkeypatch.setattr(refresh_mod, "REFRESH_STACK_BYTES", limit)
        if limit == 1:
            assert refresh_mod._subgroups(states) == [(4, [0]), (4, [1]), (4, [2]), (4, [3])]
        params = [_params()[0], _params()[0].detach().clone().requires_grad_(), *_params()[1:]]
        opt = MangoAdamW(
            params, lr=LR, setting=S(rank=4, bits=8, gamma=0.5), min_compress_numel=1024, fused=True,
            refresh_every=2, stochastic_rounding=False,
        )  # fmt: skip
        _run(params, opt, range(6))
        runs.append((params, [opt.state[p]["P"] for p in params[:4] if "P" in opt.state[p]]))
    (pa, ba), (pb, bb) = runs
    assert len(ba) == len(bb) >= 3
    # on a GPU a stack of 3 and a stack of 1 run different GEMM kernels (rounding differs in the last bits;
    # compiled on an H100: 1.4e-6 after 6 steps on values of 0.1); on the CPU the chunks match to 1e-6
    atol = 1e-6 if _device().type == "cpu" else 1e-5
    for a, b in zip(pa + ba, pb + bb, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=atol), float((a - b).detach().abs().max())


@pytest.mark.parametrize(("bm", "bn"), [(1, 64), (64, 64), (32, 128)])
def test_tile_programs_lists_each_tensors_tiles_row_major(bm: int, bn: int) -> None:
    """The projected launches' program table, built for all tensors at once, is the per-tensor grid of
    tiles: (t, first row, first column) of every ``bm x bn`` tile, tensor after tensor, rows outer."""
    ts, rows, cols = [0, 2, 5], [130, 1, 64], [65, 300, 64]
    want = [(t, i, j) for t, m, n in zip(ts, rows, cols) for i in range(0, m, bm) for j in range(0, n, bn)]
    got = fused.tile_programs(ts, rows, cols, bm, bn)
    assert got.dtype == torch.int32
    assert [tuple(r) for r in got.tolist()] == want
