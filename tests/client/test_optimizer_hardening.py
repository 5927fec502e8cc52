"""Issue 14, MangoAdamW: a huge finite gradient never makes NaN, and a foreign state dict changes nothing."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest
import torch

from client.compression.errors import MangoNonFiniteError
from client.compression.optimizer import MangoAdamW
from client.protocol import CompressionSetting

SETTINGS = [
    CompressionSetting(rank=r, bits=b, gamma=g)
    for r, b, g in itertools.product((0, 8), (2, 3, 4, 8, 16, 32), (0.0, 0.5))
]


def _model(seed: int = 0) -> list[torch.nn.Parameter]:
    torch.manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(64, 96)),  # compressed
        torch.nn.Parameter(torch.randn(64)),  # exact
        torch.nn.Parameter(torch.randn(64, 128)),  # compressed, gets the huge entry
    ]


def _all_finite(opt: MangoAdamW, params: list[torch.nn.Parameter]) -> bool:
    tensors: list[torch.Tensor] = list(params)
    for st in opt.state_dict()["state"].values():
        for v in st.values():
            if isinstance(v, torch.Tensor):
                tensors.append(v)
            elif isinstance(v, dict) and "data" in v:
                tensors += [v["data"]] + ([v["scale"]] if "scale" in v else [])
    return all(bool(torch.isfinite(t.float()).all()) for t in tensors if t.is_floating_point())


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.label())
@pytest.mark.parametrize("magnitude", [1.5e19, 1e20, 1e25, 1e30, 3e38])
def test_huge_finite_gradient_entry_keeps_everything_finite(
    setting: CompressionSetting, magnitude: float
) -> None:
    params = _model()
    opt = MangoAdamW(params, lr=1e-3, setting=setting, min_compress_numel=512)
    for step in range(4):
        for p in params:
            p.grad = torch.randn_like(p)
        if step == 1:
            params[2].grad[3, 5] = magnitude  # type: ignore[index]
            before = [p.detach().clone() for p in params]
        opt.step()  # never raises
        if step == 1:
            assert torch.equal(params[2], before[2])  # skipped whole, and counted
            assert not torch.equal(params[0], before[0])  # the others stepped
        assert _all_finite(opt, params), (setting.label(), magnitude, step)
    assert opt.skipped_updates() == 1
    assert opt.compression_stats().skipped_steps >= 1


def test_huge_gradient_in_an_exact_tensor_is_skipped_like_torch_adamw_stays_finite() -> None:
    params = _model()
    ref = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt = MangoAdamW(params, lr=1e-3, setting=CompressionSetting(rank=0, bits=8), min_compress_numel=512)
    torch_opt = torch.optim.AdamW(ref, lr=1e-3)
    for p, q in zip(params, ref):
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()
    params[1].grad[0] = ref[1].grad[0] = 1e25  # type: ignore[index]
    opt.step()
    torch_opt.step()
    assert all(bool(torch.isfinite(q).all()) for q in ref)  # torch's parameters stay finite...
    assert not bool(torch.isfinite(torch_opt.state[ref[1]]["exp_avg_sq"]).all())  # ...its state does not
    assert _all_finite(opt, params)


def test_strict_raises_before_any_update_on_a_huge_gradient() -> None:
    params = _model()
    opt = MangoAdamW(params, setting=CompressionSetting(rank=8, bits=8), min_compress_numel=512, strict=True)
    for p in params:
        p.grad = torch.randn_like(p)
    params[2].grad[0, 0] = 1e20  # type: ignore[index]
    before = [p.detach().clone() for p in params]
    with pytest.raises(MangoNonFiniteError):
        opt.step()
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    assert not opt.state


def test_large_but_sane_gradients_still_step() -> None:
    params = _model()
    opt = MangoAdamW(params, setting=CompressionSetting(rank=0, bits=4), min_compress_numel=512)
    for p in params:
        p.grad = torch.randn_like(p) * 1e6  # far from the limit: loss scaling, spikes
    opt.step()
    assert opt.skipped_updates() == 0 and _all_finite(opt, params)


# -------------------------------------------------------------------------------------------- load_state_dict


def _trained(params: list[torch.nn.Parameter], setting: CompressionSetting) -> MangoAdamW:
    opt = MangoAdamW(params, setting=setting, min_compress_numel=512)
    for _ in range(2):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    return opt


def _snapshot(opt: MangoAdamW, params: list[torch.nn.Parameter]) -> Any:
    return copy.deepcopy((opt.state_dict(), [p.detach().clone() for p in params]))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


@pytest.mark.parametrize(
    "setting",
    [
        CompressionSetting(rank=0, bits=4),
        CompressionSetting(rank=8, bits=8, gamma=0.5),
        CompressionSetting.off(),
    ],
    ids=lambda s: s.label(),
)
@pytest.mark.parametrize(
    ("other_shapes", "words"),
    [
        ([(96, 64), (64,), (64, 128)], "parameter 0 had shape (64, 96)"),  # transposed: same count, same size
        ([(64, 96), (64,), (128, 64)], "parameter 2 had shape (64, 128)"),
        ([(32, 192), (64,), (64, 128)], "parameter 0 had shape (64, 96)"),  # same numel
        ([(64, 96), (64,)], "parameters per group [3], this optimizer has [2]"),
    ],
)
def test_state_dict_of_another_model_is_refused_before_anything_changes(
    setting: CompressionSetting, other_shapes: list[tuple[int, ...]], words: str
) -> None:
    saved = _trained(_model(), setting).state_dict()
    torch.manual_seed(1)
    other = [torch.nn.Parameter(torch.randn(*s)) for s in other_shapes]
    opt = _trained(other, CompressionSetting(rank=0, bits=8))
    before = _snapshot(opt, other)
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        opt.load_state_dict(saved)
    assert _same(_snapshot(opt, other), before)  # nothing changed
    for p in other:  # and it still steps
        p.grad = torch.randn_like(p)
    opt.step()


def test_state_dict_without_param_shapes_is_still_checked_by_its_state_shapes() -> None:
    saved = _trained(_model(), CompressionSetting(rank=0, bits=4)).state_dict()
    del saved["mango"]["param_shapes"]  # a checkpoint written before the field existed
    other = [torch.nn.Parameter(torch.randn(*s)) for s in [(96, 64), (64,), (64, 128)]]
    opt = _trained(other, CompressionSetting(rank=0, bits=8))
    before = _snapshot(opt, other)
    with pytest.raises(
        ValueError, match=r"state of parameter 0 \(shape \(96, 64\)\): m has shape \(64, 96\)"
    ):
        opt.load_state_dict(saved)
    assert _same(_snapshot(opt, other), before)


@pytest.mark.parametrize(
    ("remove", "words"),
    [
        (("state",), "missing \\['state'\\]"),
        (("param_groups",), "missing \\['param_groups'\\]"),
        (("mango", "generator"), "missing \\['mango.generator'\\]"),
        (("mango", "config"), "missing \\['mango.config'\\]"),
    ],
)
def test_state_dict_missing_an_entry_names_it(remove: tuple[str, ...], words: str) -> None:
    params = _model()
    opt = _trained(params, CompressionSetting(rank=0, bits=4))
    sd = opt.state_dict()
    node = sd
    for k in remove[:-1]:
        node = node[k]
    del node[remove[-1]]
    before = _snapshot(opt, params)
    with pytest.raises(ValueError, match=words):
        opt.load_state_dict(sd)
    assert _same(_snapshot(opt, params), before)


def test_corrupt_state_values_are_refused_before_anything_changes() -> None:
    params = _model()
    opt = _trained(params, CompressionSetting(rank=8, bits=4))
    before = _snapshot(opt, params)
    cases: list[tuple[Any, str]] = []
    sd = opt.state_dict()
    sd["mango"]["setting"] = {"rank": 5, "bits": 4, "gamma": 0.0}
    cases.append((sd, "invalid value"))
    sd = opt.state_dict()
    sd["state"][7] = sd["state"][0]
    cases.append((sd, "state for parameter 7"))
    sd = opt.state_dict()
    sd["mango"]["config"]["__class__"] = object
    cases.append((sd, "unknown knobs"))
    sd = opt.state_dict()
    sd["state"][0]["P"] = torch.zeros(64, 4)
    cases.append((sd, "P has shape"))
    for sd, words in cases:
        with pytest.raises(ValueError, match=words):
            opt.load_state_dict(sd)
        assert _same(_snapshot(opt, params), before), words


def test_round_trip_still_loads_and_resumes_bit_for_bit() -> None:
    a = _model()
    opt_a = _trained(a, CompressionSetting(rank=8, bits=4, gamma=0.5))
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    opt_b = MangoAdamW(b, min_compress_numel=512)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    g = [torch.randn_like(p) for p in a]
    for params, opt in ((a, opt_a), (b, opt_b)):
        for p, gi in zip(params, g):
            p.grad = gi.clone()
        opt.step()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
