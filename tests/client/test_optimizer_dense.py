"""The torch path's multi-tensor AdamW (``_DenseGroup``: exact tensors and identity matrices stepped with
``torch._foreach_*`` ops) against the tensor-by-tensor step it replaces: bit for bit over several steps, with
mixed shapes, several groups, weight decay and ``maximize`` on and off, tensors that miss steps, a setting
change into and out of the identity setting, and with compressed matrices beside it."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch

from client.compression import MangoAdamW
from client.compression import optimizer as opt_mod
from client.protocol import CompressionSetting as S
from tests.client.step_compare import assert_same, make_params, seeded_grads, two_groups

SHAPES = [(64, 24), (40, 64), (6, 40), (8, 4, 12), (64,), (40,), (6,), (3, 5), (1,)]


def _tensor_by_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route every tensor to the tensor-by-tensor step (the reference)."""
    monkeypatch.setattr(opt_mod.MangoAdamW, "_dense_state", lambda self, p, g, st, group: None)


def _run(
    setting: S,
    wd: float,
    maximize: bool,
    steps: int,
    between: Callable[[MangoAdamW, int], None] | None = None,
) -> tuple[list[torch.nn.Parameter], MangoAdamW]:
    params = make_params(SHAPES, 0)
    groups = two_groups(params, wd, maximize)
    opt = MangoAdamW(groups, lr=1e-2, setting=setting, min_compress_numel=256, seed=3)
    for t in range(steps):
        seeded_grads(params, t)
        opt.step()
        if between is not None:
            between(opt, t)
    return params, opt


@pytest.mark.parametrize("wd", [0.0, 0.05])
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("setting", [S.off(), S(rank=0, bits=8), S(rank=4, bits=4, gamma=0.5)])
def test_multi_tensor_step_equals_the_tensor_by_tensor_step(
    setting: S, wd: float, maximize: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = _run(setting, wd, maximize, steps=6)
    with monkeypatch.context() as m:
        _tensor_by_tensor(m)
        ref = _run(setting, wd, maximize, steps=6)
    assert_same(new, ref)
    # the statistics read the same (energies from the gradient norms: float rounding apart)
    a, b = new[1].compression_stats(), ref[1].compression_stats()
    for key in ("compression_error", "spectral_tail", "grad_kurtosis", "grad_norm"):
        assert getattr(a, key) == pytest.approx(getattr(b, key), rel=1e-5, abs=1e-12), key


def test_multi_tensor_step_across_setting_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Into the identity setting with error buffers left over (flushed tensor by tensor, then stepped
    together), out of it and back, as the hook's policy switches."""

    def switch(opt: MangoAdamW, t: int) -> None:
        plan = {1: S(rank=0, bits=8), 3: S.off(), 5: S(rank=4, bits=8), 7: S.off()}
        if t in plan:
            opt.apply_setting(plan[t])

    new = _run(S.off(), 0.05, False, steps=10, between=switch)
    with monkeypatch.context() as m:
        _tensor_by_tensor(m)
        ref = _run(S.off(), 0.05, False, steps=10, between=switch)
    assert_same(new, ref)


def test_identity_setting_steps_every_tensor_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """At r0/b32/g0 no tensor takes the tensor-by-tensor step (a contiguous fp32 model)."""
    calls: list[str] = []
    for name in ("_exact_step", "_matrix_step"):
        original = getattr(opt_mod.MangoAdamW, name)
        monkeypatch.setattr(
            opt_mod.MangoAdamW,
            name,
            lambda self, *a, _n=name, _f=original: (calls.append(_n), _f(self, *a))[1],
        )
    params, opt = _run(S.off(), 0.05, False, steps=3)
    assert calls == []
    assert all(opt.state[p]["step"] == (2 if j in (1, 4) else 3) for j, p in enumerate(params))


def test_identity_steps_match_torch_adamw_foreach() -> None:
    """One group, no skipped tensors: torch's own foreach AdamW, value for value."""
    a, b = make_params(SHAPES, 1), make_params(SHAPES, 1)
    ref = torch.optim.AdamW(a, lr=1e-2, weight_decay=0.05, foreach=True)
    opt = MangoAdamW(b, lr=1e-2, weight_decay=0.05, setting=S.off(), min_compress_numel=256)
    for t in range(5):
        gen = torch.Generator().manual_seed(t)
        for p, q in zip(a, b, strict=True):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        ref.step()
        opt.step()
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q)


def test_non_contiguous_and_bf16_tensors_take_the_tensor_by_tensor_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the multi-tensor step leaves alone still steps (and equals the reference)."""

    def make() -> list[torch.nn.Parameter]:
        gen = torch.Generator().manual_seed(5)
        wide = torch.nn.Parameter(torch.randn(64, 24, generator=gen).T)  # non-contiguous (24, 64) matrix
        half = torch.nn.Parameter(torch.randn(64, 24, generator=gen).bfloat16())
        bias = torch.nn.Parameter(torch.randn(24, generator=gen).bfloat16())
        return [wide, half, bias]

    def run() -> list[torch.nn.Parameter]:
        ps = make()
        opt = MangoAdamW(ps, lr=1e-2, setting=S.off(), min_compress_numel=256)
        for t in range(4):
            gen = torch.Generator().manual_seed(t)
            for p in ps:
                p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)
            opt.step()
        return ps

    new = run()
    with monkeypatch.context() as m:
        _tensor_by_tensor(m)
        ref = run()
    for x, y in zip(new, ref, strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(new[0], make()[0])  # it moved


def test_copy_of_a_dense_state_resumes_bit_for_bit() -> None:
    """A state dict taken after multi-tensor steps resumes into the same values (layout unchanged)."""
    params, opt = _run(S.off(), 0.05, True, steps=3)
    params2 = [torch.nn.Parameter(p.detach().clone()) for p in params]
    groups2 = two_groups(params2, 0.05, True)
    opt2 = MangoAdamW(groups2, lr=1e-2, setting=S.off(), min_compress_numel=256, seed=3)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    for t in range(3, 6):
        seeded_grads(params, t)
        seeded_grads(params2, t)
        opt.step()
        opt2.step()
    for x, y in zip(params, params2, strict=True):
        assert torch.equal(x, y)
