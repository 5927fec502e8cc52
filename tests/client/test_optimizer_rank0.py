"""The torch path's batched rank-0 step (:mod:`client.compression.rank0`: quantized rank-0 matrices laid end
to end, one quantizer call per state) against the tensor-by-tensor step it replaces.

Round to nearest: bit for bit over several steps (parameters and every stored state: codes, scales,
factored statistics), at 8 bits, 4 bits (NF4, uniform, ACIQ), 3 and 2 bits, with error feedback on and off,
``gamma > 0``, weight decay, ``maximize``, two parameter groups, tensors that miss steps, shapes that are not
whole blocks (they keep the tensor-by-tensor step), setting changes and a state dict resumed. Stochastic
rounding: the same distribution (means and spreads over seeds, with tolerances a biased or deterministic
quantizer fails)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch

from client.compression import MangoAdamW, quant
from client.compression import rank0 as rank0_mod
from client.compression.slots import _load
from client.protocol import CompressionSetting as S
from tests.client.step_compare import assert_same, make_params, seeded_grads, two_groups

# whole blocks at 8 bits (256) and below (64), wide and tall (transposed canonical view), 3-D; then a matrix
# of partial blocks (tensor by tensor), a vector and a small exact matrix
SHAPES = [(64, 24), (40, 64), (24, 64), (8, 4, 32), (64, 48), (20, 20), (64,), (3, 5)]


def _tensor_by_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route every matrix to the tensor-by-tensor step (the reference)."""
    monkeypatch.setattr(rank0_mod, "batch_key", lambda *a: None)


def _run(
    setting: S,
    steps: int,
    *,
    wd: float = 0.05,
    maximize: bool = False,
    between: Callable[[MangoAdamW, int], None] | None = None,
    **kw: Any,
) -> tuple[list[torch.nn.Parameter], MangoAdamW]:
    params = make_params(SHAPES, 0)
    kw.setdefault("stochastic_rounding", False)
    opt = MangoAdamW(
        two_groups(params, wd, maximize), lr=1e-2, setting=setting, min_compress_numel=256, seed=3, **kw
    )
    for t in range(steps):
        seeded_grads(params, t)
        opt.step()
        if between is not None:
            between(opt, t)
    return params, opt


def _compare(monkeypatch: pytest.MonkeyPatch, setting: S, steps: int = 6, **kw: Any) -> None:
    calls: list[int] = []
    original = rank0_mod.Rank0Batch.step
    with monkeypatch.context() as m:
        m.setattr(
            rank0_mod.Rank0Batch,
            "step",
            lambda self, *a: (calls.append(len(self.params)), original(self, *a)),
        )
        new = _run(setting, steps, **kw)
    with monkeypatch.context() as m:
        _tensor_by_tensor(m)
        ref = _run(setting, steps, **kw)
    assert_same(new, ref)
    assert calls and max(calls) >= 2  # the batch ran, with several matrices
    a, b = new[1].compression_stats(), ref[1].compression_stats()
    for key in ("compression_error", "spectral_tail", "grad_kurtosis", "grad_norm"):
        assert getattr(a, key) == pytest.approx(getattr(b, key), rel=1e-5, abs=1e-12), key


@pytest.mark.parametrize(
    ("setting", "kw"),
    [
        (S(rank=0, bits=8), {}),
        (S(rank=0, bits=4), {}),  # m, e and sqrt(v) on the 4-bit uniform code
        (S(rank=0, bits=4), {"factor_second_moment": True}),  # factored v
        (S(rank=0, bits=4), {"quant_mode": "nf4"}),
        (S(rank=0, bits=4), {"quant_mode": "aciq"}),
        (S(rank=0, bits=3), {}),
        (S(rank=0, bits=2), {"factor_second_moment": False}),
        (S(rank=0, bits=8), {"factor_second_moment": True}),
        (S(rank=0, bits=8, gamma=0.5), {}),
        (S(rank=0, bits=4, gamma=0.3), {"error_feedback": False}),
        (S(rank=0, bits=8), {"error_feedback": False}),
    ],
    ids=lambda v: v.label() if isinstance(v, S) else ",".join(f"{k}={x}" for k, x in v.items()) or "-",
)
def test_batched_rank0_step_equals_the_tensor_by_tensor_step(
    setting: S, kw: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _compare(monkeypatch, setting, **kw)


@pytest.mark.parametrize("wd", [0.0, 0.05])
@pytest.mark.parametrize("maximize", [False, True])
def test_batched_rank0_step_with_weight_decay_and_maximize(
    wd: float, maximize: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    _compare(monkeypatch, S(rank=0, bits=8), steps=4, wd=wd, maximize=maximize)


def test_batched_rank0_step_across_setting_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """8 -> 4 bits (factored v appears), a projection and back, the identity setting, 2 bits, one group
    pinned: the converted states step in the batch again (or tensor by tensor where their form differs)."""

    def switch(opt: MangoAdamW, t: int) -> None:
        plan = {
            1: S(rank=0, bits=4),
            2: S(rank=0, bits=4, gamma=0.5),
            4: S(rank=4, bits=8),
            5: S(rank=0, bits=8),
            7: S.off(),
            8: S(rank=0, bits=2),
        }
        if t in plan:
            opt.apply_setting(plan[t])
        if t == 6:
            opt.apply_setting(S(rank=0, bits=3), group=1)

    _compare(monkeypatch, S(rank=0, bits=8), steps=11, between=switch)


def test_state_dict_resume_after_batched_steps_is_bit_for_bit() -> None:
    for setting in (S(rank=0, bits=8), S(rank=0, bits=4)):
        params, opt = _run(setting, 3)
        params2 = [torch.nn.Parameter(p.detach().clone()) for p in params]
        opt2 = MangoAdamW(
            two_groups(params2, 0.05, False), lr=1e-2, setting=setting, min_compress_numel=256, seed=3,
            stochastic_rounding=False,
        )  # fmt: skip
        opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
        for t in range(3, 6):
            seeded_grads(params, t)
            seeded_grads(params2, t)
            opt.step()
            opt2.step()
        assert_same((params, opt), (params2, opt2))


def test_the_batch_keeps_each_matrix_its_own_blocks() -> None:
    """Each stored state is a quantized tensor of its own parameter's shape and blocks, and equals the
    quantizer's code of that state alone."""
    params, opt = _run(S(rank=0, bits=4), 2)
    for p in params[:5]:
        st = opt.state[p]
        for key in ("m", "e"):
            q = st[key]
            assert isinstance(q, quant.QuantizedTensor) and q.shape == p.shape and q.mode == "uniform"
            assert q.scale.numel() == p.numel() // q.block
            again = quant.quantize(_load(q), 4, mode="uniform", stochastic=False)
            assert torch.equal(again.data, q.data) and torch.equal(again.scale, q.scale)


def test_cat_helpers_match_the_per_tensor_quantizer() -> None:
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(s, generator=gen) for s in [(64, 24), (8, 4, 32), (40, 64)]]
    flat = torch.cat([x.reshape(-1) for x in xs])
    for bits, mode in ((8, "uniform"), (4, "nf4"), (3, "uniform"), (2, "aciq")):
        parts = quant.quantize_cat(flat, [x.shape for x in xs], bits, mode=mode, stochastic=False)
        for x, q in zip(xs, parts, strict=True):
            ref = quant.quantize(x, bits, mode=mode, stochastic=False)
            assert torch.equal(q.data, ref.data) and torch.equal(q.scale, ref.scale) and q.shape == x.shape
        assert torch.equal(
            quant.dequantize_cat(parts), torch.cat([quant.dequantize(q).reshape(-1) for q in parts])
        )
        rt = quant.roundtrip_torch(flat, bits, mode=mode, stochastic=False)
        assert torch.equal(rt, quant.dequantize_cat(parts))
    with pytest.raises(ValueError, match="whole"):
        quant.quantize_cat(torch.randn(100), [torch.Size((100,))], 8)


# ---------------------------------------------------------------------------------- stochastic rounding
def _one_step_states(batched: bool, seeds: int, bits: int, monkeypatch: pytest.MonkeyPatch) -> torch.Tensor:
    """Per seed, the dequantized ``m`` and ``e`` and the parameters after two stochastic steps (one row)."""
    rows = []
    with monkeypatch.context() as m:
        if not batched:
            _tensor_by_tensor(m)
        for seed in range(seeds):
            params = make_params(SHAPES, 0)[:4]
            opt = MangoAdamW(params, lr=1e-2, setting=S(rank=0, bits=bits), min_compress_numel=256, seed=seed,
                             stochastic_rounding=True)  # fmt: skip
            for t in range(2):
                gen = torch.Generator().manual_seed(100 + t)
                for p in params:
                    p.grad = torch.randn(p.shape, generator=gen) * 0.01
                opt.step()
            parts = [_load(opt.state[p][k]).reshape(-1) for p in params for k in ("m", "e")]
            rows.append(torch.cat([*parts, *(p.detach().reshape(-1) for p in params)]))
    return torch.stack(rows)


@pytest.mark.parametrize("bits", [8, 4])
def test_stochastic_batched_step_has_the_tensor_by_tensor_distribution(
    bits: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over 64 seeds each, the two paths' means agree value by value within a z-bound and their spreads
    match: a deterministic or biased quantizer in either path fails (its spread is 0, or its mean shifts by
    a fraction of a quantization step, tens of standard errors at this count)."""
    n = 64
    a = _one_step_states(True, n, bits, monkeypatch)
    b = _one_step_states(False, n, bits, monkeypatch)
    va, vb = a.var(dim=0), b.var(dim=0)
    moving = (va + vb) > 1e-20  # entries that rounding moves (others are equal in both)
    assert int(moving.sum()) > 1000
    z = (a.mean(dim=0) - b.mean(dim=0))[moving] / ((va + vb)[moving] / n).sqrt()
    assert z.abs().max() < 6.0, z.abs().max()  # ~1e4 entries: |z| > 6 by chance has probability ~2e-5
    assert z.mean().abs() < 0.1, z.mean()  # no shift on average (the mean of ~1e4 z-scores: sd ~0.01)
    ratio = va[moving].sum() / vb[moving].sum()
    assert 0.85 < ratio < 1.18, ratio
