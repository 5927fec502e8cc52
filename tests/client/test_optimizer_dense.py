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

SHAPES = [(64, 24), (40, 64), (6, 40), (8, 4, 12), (64,), (40,), (6,), (3, 5), (1,)]


def _params(seed: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.1) for s in SHAPES]


def _groups(params: list[torch.nn.Parameter], wd: float, maximize: bool) -> list[dict]:
    """Two groups that differ in every AdamW hyper-parameter; the first one's ``maximize`` as given."""
    return [
        {"params": params[::2], "weight_decay": wd, "maximize": maximize},
        {"params": params[1::2], "lr": 2e-3, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
    ]


def _grads(params: list[torch.nn.Parameter], t: int) -> None:
    """Seeded gradients of mixed magnitudes; at odd steps the 2nd and 5th tensors get none (their step counts
    fall behind the others')."""
    gen = torch.Generator().manual_seed(100 + t)
    for j, p in enumerate(params):
        p.grad = None if t % 2 and j in (1, 4) else torch.randn(p.shape, generator=gen) * 10.0 ** (j % 3 - 2)


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
    params = _params(0)
    opt = MangoAdamW(_groups(params, wd, maximize), lr=1e-2, setting=setting, min_compress_numel=256, seed=3)
    for t in range(steps):
        _grads(params, t)
        opt.step()
        if between is not None:
            between(opt, t)
    return params, opt


def _assert_same(
    a: tuple[list[torch.nn.Parameter], MangoAdamW], b: tuple[list[torch.nn.Parameter], MangoAdamW]
):
    (pa, oa), (pb, ob) = a, b
    for x, y in zip(pa, pb, strict=True):
        assert torch.equal(x, y), (x - y).abs().max()
    sa, sb = oa.state_dict()["state"], ob.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].keys() == sb[k].keys(), k
        for key in sa[k]:
            va, vb = sa[k][key], sb[k][key]
            if isinstance(va, torch.Tensor):
                assert torch.equal(va, vb), (k, key)
            elif isinstance(va, dict):
                assert va.keys() == vb.keys()
                for f in va:
                    same = torch.equal(va[f], vb[f]) if isinstance(va[f], torch.Tensor) else va[f] == vb[f]
                    assert same, (k, key, f)
            else:
                assert va == vb, (k, key)


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
    _assert_same(new, ref)
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
    _assert_same(new, ref)


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
    a, b = _params(1), _params(1)
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
    opt2 = MangoAdamW(_groups(params2, 0.05, True), lr=1e-2, setting=S.off(), min_compress_numel=256, seed=3)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    for t in range(3, 6):
        _grads(params, t)
        _grads(params2, t)
        opt.step()
        opt2.step()
    for x, y in zip(params, params2, strict=True):
        assert torch.equal(x, y)
