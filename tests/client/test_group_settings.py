"""Per-parameter-group compression settings: a group may pin its own ``setting`` (embeddings uncompressed,
attention at a higher rank); the optimizer-wide setting (and so the hook's policy) moves only the others."""

from __future__ import annotations

import io

import pytest
import torch

from client.compression.optimizer import MangoAdamW
from client.controllers import Controller
from client.hook import AdaptiveCompression
from client.protocol import CompressionSetting as S
from client.protocol import Objective, TelemetryRecord
from client.telemetry import ModelledMeter


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(64, 32)
        self.attn = torch.nn.Linear(32, 96)
        self.out = torch.nn.Linear(96, 16)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.attn(self.emb(idx))))


def _groups(net: Net) -> list[dict]:
    return [
        {"params": [net.emb.weight], "setting": S.off()},
        {"params": [net.attn.weight], "setting": S(rank=16, bits=8)},
        {"params": [net.out.weight, net.attn.bias, net.out.bias]},
    ]


def _train(net: Net, opt: torch.optim.Optimizer, steps: int, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, 64, (32,), generator=g)
        y = torch.randn(32, 16, generator=g)
        loss = (net(idx) - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


class _Both(torch.optim.Optimizer):
    """Two optimizers stepped as one (the reference: AdamW on the embedding, MangoAdamW on the rest)."""

    def __init__(self, a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> None:
        self.a, self.b = a, b

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.a.zero_grad()
        self.b.zero_grad()

    def step(self, closure=None) -> None:  # type: ignore[no-untyped-def,override]
        self.a.step()
        self.b.step()


def _net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def test_pinned_groups_keep_their_setting_and_off_is_adamw() -> None:
    net, ref = _net(), _net()
    opt = MangoAdamW(_groups(net), lr=1e-2, setting=S(rank=4, bits=4), min_compress_numel=256)
    adamw = torch.optim.AdamW([ref.emb.weight], lr=1e-2, weight_decay=0.01)
    rest = MangoAdamW(_groups(ref)[1:], lr=1e-2, setting=S(rank=4, bits=4), min_compress_numel=256)
    _train(net, opt, 5)
    _train(ref, _Both(adamw, rest), 5)
    assert torch.equal(net.emb.weight, ref.emb.weight)  # S.off(): AdamW operation for operation
    st = opt.state
    assert st[net.emb.weight]["rank"] == 0 and isinstance(st[net.emb.weight]["m"], torch.Tensor)
    assert st[net.attn.weight]["rank"] == 16 and st[net.attn.weight]["P"].shape == (32, 16)
    assert st[net.attn.weight]["m"].bits == 8  # type: ignore[union-attr]
    assert st[net.out.weight]["rank"] == 4 and st[net.out.weight]["m"].bits == 4  # type: ignore[union-attr]

    opt.apply_setting(S(rank=2, bits=8))  # optimizer-wide: only the unpinned group converts
    assert st[net.emb.weight]["rank"] == 0 and st[net.attn.weight]["rank"] == 16
    assert st[net.out.weight]["rank"] == 2 and st[net.out.weight]["m"].bits == 8  # type: ignore[union-attr]
    opt.apply_setting(S(rank=8, bits=4), group=1)  # re-pin one group
    assert st[net.attn.weight]["rank"] == 8 and opt.param_groups[1]["setting"] == S(rank=8, bits=4)
    opt.apply_setting(None, group=1)  # unpin: it follows the optimizer-wide setting again
    assert st[net.attn.weight]["rank"] == 2 and opt.param_groups[1]["setting"] is None
    _train(net, opt, 2)
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_state_dict_round_trip_keeps_pins_and_loads_weights_only() -> None:
    net = _net()
    opt = MangoAdamW(_groups(net), lr=1e-2, setting=S(rank=4, bits=4), min_compress_numel=256)
    _train(net, opt, 3)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    assert sd["param_groups"][1]["setting"] == S(rank=16, bits=8).model_dump()

    net2 = _net()
    net2.load_state_dict(net.state_dict())
    plain = [{"params": g["params"]} for g in _groups(net2)]  # built without pins: the checkpoint's win
    opt2 = MangoAdamW(plain, lr=1e-2, setting=S(rank=4, bits=4), min_compress_numel=256)
    opt2.load_state_dict(sd)
    assert [g.get("setting") for g in opt2.param_groups] == [S.off(), S(rank=16, bits=8), None]
    _train(net, opt, 3, seed=1)
    _train(net2, opt2, 3, seed=1)
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)


def test_group_keys_and_setting_values_checked() -> None:
    net = _net()
    with pytest.raises(ValueError, match=r"unknown parameter-group key\(s\) \['rank'\].*'setting': Compress"):
        MangoAdamW([{"params": [net.attn.weight], "rank": 4}])
    with pytest.raises(ValueError, match=r"\['settings'\]"):
        MangoAdamW([{"params": [net.attn.weight], "settings": S.off()}])
    with pytest.raises(TypeError, match=r"param group 0: setting must be a client\.protocol\.Compression"):
        MangoAdamW([{"params": [net.attn.weight], "setting": (4, 8)}])
    with pytest.raises(ValueError, match=r"param group 0: setting .* is not a valid CompressionSetting"):
        MangoAdamW([{"params": [net.attn.weight], "setting": {"rank": 4, "bits": 5}}])
    opt = MangoAdamW([{"params": [net.attn.weight], "setting": {"rank": 4, "bits": 8}}])
    assert opt.param_groups[0]["setting"] == S(rank=4, bits=8)
    with pytest.raises(ValueError, match="group=3 is not a parameter-group index"):
        opt.apply_setting(S.off(), group=3)


def test_hook_policy_moves_only_unpinned_groups() -> None:
    low, high = S(rank=2, bits=8), S(rank=8, bits=4)

    class Alternate(Controller):
        name = "alternate"

        def decide(self, history: list[TelemetryRecord], objective: Objective) -> S:  # type: ignore[override]
            self.reason = "alternate"
            return high if len(history) % 2 else low

    net = _net()
    opt = MangoAdamW(_groups(net), lr=1e-2, setting=low, min_compress_numel=256)
    seen: list[tuple[int, int, int]] = []
    g = torch.Generator().manual_seed(0)
    with AdaptiveCompression(
        opt, interval_steps=3, controller=Alternate(), energy_meter=ModelledMeter(flops_per_step=1e6)
    ) as hook:
        for _ in range(12):
            idx = torch.randint(0, 64, (32,), generator=g)
            loss = net(idx).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            hook.step(loss)
            st = opt.state
            seen.append((st[net.emb.weight]["rank"], st[net.attn.weight]["rank"], st[net.out.weight]["rank"]))
    assert hook.counters["setting_changes"] >= 2
    assert {s[:2] for s in seen} == {(0, 16)}  # pinned groups untouched by the policy
    assert {s[2] for s in seen} == {2, 8}  # the unpinned group follows it
