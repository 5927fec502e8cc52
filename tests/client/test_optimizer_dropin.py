"""MangoAdamW as a drop-in for torch.optim.AdamW: the positional order, tensor ``lr``, the torch.optim flags
(supported or refused with the reason), checked parameter groups and refused parameter kinds."""

from __future__ import annotations

import pytest
import torch

from client.compression.optimizer import MangoAdamW
from client.protocol import CompressionSetting as S


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 8))


def _train(opt: torch.optim.Optimizer, net: torch.nn.Module, steps: int = 5, sign: float = 1.0) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 16, generator=gen)
        loss = sign * net(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_torch_positional_order_and_keyword_only_setting() -> None:
    net = _net()
    opt = MangoAdamW(net.parameters(), 1e-3, (0.9, 0.99), 1e-8, 0.01, False, setting=S(rank=0, bits=8))
    assert opt.defaults["amsgrad"] is False and opt.setting == S(rank=0, bits=8)
    with pytest.raises(TypeError, match="keyword-only"):
        MangoAdamW(net.parameters(), 1e-3, (0.9, 0.99), 1e-8, 0.01, S(rank=8, bits=4))  # type: ignore[arg-type]


@pytest.mark.parametrize("setting", [S.off(), S(rank=4, bits=8)])
def test_tensor_lr_matches_float_lr_and_schedulers_keep_it_a_tensor(setting: S) -> None:
    a, b = _net(), _net()
    oa = MangoAdamW(a.parameters(), lr=2**-7, setting=setting, min_compress_numel=64)
    ob = MangoAdamW(b.parameters(), lr=torch.tensor(2**-7), setting=setting, min_compress_numel=64)
    sched = torch.optim.lr_scheduler.StepLR(ob, step_size=2, gamma=0.5)
    sched_a = torch.optim.lr_scheduler.StepLR(oa, step_size=2, gamma=0.5)
    for _ in range(4):
        _train(oa, a, 1)
        _train(ob, b, 1)
        sched.step()
        sched_a.step()
    assert isinstance(ob.param_groups[0]["lr"], torch.Tensor)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_off_setting_with_torch_flags_equals_adamw_including_maximize() -> None:
    a, b = _net(), _net()
    ref = torch.optim.AdamW(a.parameters(), lr=1e-2, maximize=True, foreach=False)
    opt = MangoAdamW(
        b.parameters(), lr=1e-2, maximize=True, foreach=False, setting=S.off(), min_compress_numel=64
    )
    _train(ref, a, sign=-1.0)
    _train(opt, b, sign=-1.0)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    grads = [p.grad.clone() for p in b.parameters() if p.grad is not None]
    opt.step()  # the gradients come back as they were (negated for the step only)
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, b.parameters(), strict=True))


def test_maximize_compressed_is_minimizing_the_negation() -> None:
    a, b = _net(), _net()
    oa = MangoAdamW(a.parameters(), lr=1e-2, setting=S(rank=4, bits=4), min_compress_numel=64)
    ob = MangoAdamW(b.parameters(), lr=1e-2, setting=S(rank=4, bits=4), min_compress_numel=64, maximize=True)
    _train(oa, a)
    _train(ob, b, sign=-1.0)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)  # -(-g) is exact, and every random draw is the same


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"amsgrad": True}, ValueError, "torch.optim.AdamW\\(amsgrad=True\\)"),
        ({"capturable": True}, ValueError, "CUDA-graph"),
        ({"differentiable": True}, ValueError, "no_grad"),
        ({"maximize": 1}, TypeError, "maximize must be True or False"),
        ({"foreach": "yes"}, TypeError, "foreach"),
        ({"fused": 1}, TypeError, "fused"),
        ({"lr": torch.tensor([1e-3, 1e-3])}, TypeError, "one-element"),
        ({"lr": torch.tensor(float("nan"))}, TypeError, "finite"),
    ],
)
def test_flags_refused_with_guidance(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        MangoAdamW(_net().parameters(), **kwargs)


def test_param_group_keys_checked() -> None:
    net = _net()
    w, rest = net[0].weight, [p for n, p in net.named_parameters() if n != "0.weight"]
    with pytest.raises(ValueError, match="'rank'") as info:
        MangoAdamW([{"params": [w], "rank": 4}])
    assert "project" in str(info.value) and "'weight_decay'" in str(info.value)  # lists the allowed keys
    with pytest.raises(ValueError, match="amsgrad=True is not supported by MangoAdamW \\(param group 1\\)"):
        MangoAdamW([{"params": [w]}, {"params": rest, "amsgrad": True}])
    with pytest.raises(TypeError, match="lr must be a finite number"):
        MangoAdamW([{"params": [w], "lr": "fast"}])
    opt = MangoAdamW([{"params": [w], "lr": 1e-2, "maximize": True, "project": False}, {"params": rest}])
    assert [g["maximize"] for g in opt.param_groups] == [True, False]


def test_refused_parameters_are_named() -> None:
    net = _net().double()
    with pytest.raises(ValueError, match=r"0.weight .*float64.*model.float"):
        MangoAdamW(net.named_parameters())
    with pytest.raises(ValueError, match=r"param group 0, parameter 0 .*float64"):
        MangoAdamW(net.parameters())
    opt = MangoAdamW(_net().parameters())
    z = torch.nn.Parameter(torch.zeros(4, 4, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"param group 1, parameter 0 .*complex.*view_as_real"):
        opt.add_param_group({"params": [z]})
    assert len(opt.param_groups) == 1  # the refused group was not kept
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(3))], "lr": 1e-4})
    assert opt.param_groups[1]["lr"] == 1e-4 and opt.param_groups[1]["maximize"] is False


def test_named_parameters_and_state_dict_round_trip_with_new_keys() -> None:
    net = _net()
    opt = MangoAdamW(net.named_parameters(), lr=torch.tensor(3e-3), maximize=False)
    _train(opt, net, 2)
    sd = opt.state_dict()
    assert sd["param_groups"][0]["param_names"][0] == "0.weight"
    again = MangoAdamW(_net().named_parameters(), lr=torch.tensor(3e-3))
    again.load_state_dict(sd)
    assert again.param_groups[0]["maximize"] is False
