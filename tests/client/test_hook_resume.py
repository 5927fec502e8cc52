"""AdaptiveCompression.state_dict / load_state_dict: a job stopped mid-interval and resumed from a
``torch.save`` checkpoint (read back with ``weights_only=True``) continues exactly as the uninterrupted job:
same parameters, optimizer state, telemetry window, controller decisions and counters."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch

from client.compression.optimizer import MangoAdamW
from client.controllers import LoRAvenController
from client.hook import AdaptiveCompression
from client.protocol import CompressionSetting
from client.telemetry import ModelledMeter

#: Fields of a record that measure the clock (they differ between any two runs).
CLOCK = {"energy_j", "mean_power_w", "interval_s", "peak_memory_bytes", "energy_coarse"}


def _job(
    seed: int = 0,
) -> tuple[torch.nn.Module, MangoAdamW, AdaptiveCompression, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64))
    opt = MangoAdamW(
        model.parameters(), lr=3e-3, setting=CompressionSetting(rank=8, bits=4), min_compress_numel=512
    )
    # a tight target so the rank moves (and the cooldown is mid-way at the checkpoint)
    controller = LoRAvenController(target_error=0.02, cooldown_intervals=1, ranks=(2, 4, 8, 16))
    hook = AdaptiveCompression(
        opt,
        interval_steps=7,
        planned_steps=60,
        controller=controller,
        energy_meter=ModelledMeter(flops_per_step=1e6),
        job_id="job-resume",
    )
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(256, 16, generator=gen)
    y = torch.randn(256, 64, generator=gen)
    return model, opt, hook, x, y


def _train(
    model: torch.nn.Module, opt: MangoAdamW, hook: AdaptiveCompression, x: Any, y: Any, a: int, b: int
) -> None:
    for step in range(a, b):
        idx = torch.arange(step * 8, step * 8 + 32) % x.shape[0]  # the batch is a function of the step
        loss = (model(x[idx]) - y[idx]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hook.step(loss)


def _hook_view(hook: AdaptiveCompression) -> dict[str, Any]:
    sd = hook.state_dict()
    sd["history"] = [{k: v for k, v in r.items() if k not in CLOCK} for r in sd["history"]]
    sd["decisions"] = [{k: v for k, v in d.items() if k != "latency_ms"} for d in sd["decisions"]]
    ref = sd["reference"]
    sd["reference"] = {k: v for k, v in ref.items() if k in ("initial_loss", "dense_state_bytes")}
    del sd["overhead_s"], sd["apply_s"]
    return sd


def _assert_same_optimizer(a: dict[str, Any], b: dict[str, Any]) -> None:
    def flat(x: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(x, dict):
            out: dict[str, Any] = {}
            for k, v in x.items():
                out.update(flat(v, f"{prefix}/{k}"))
            return out
        if isinstance(x, list | tuple) and x and isinstance(x[0], dict):
            out = {}
            for i, v in enumerate(x):
                out.update(flat(v, f"{prefix}/{i}"))
            return out
        return {prefix: x}

    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    for k, va in fa.items():
        vb = fb[k]
        if isinstance(va, torch.Tensor):
            assert torch.equal(va, vb), k
        else:
            assert va == vb, k


def test_resume_mid_interval_is_bit_exact() -> None:
    total, cut = 60, 38  # 38 = 5 intervals of 7 + 3 steps into the sixth
    model, opt, hook, x, y = _job()
    _train(model, opt, hook, x, y, 0, total)
    assert hook.counters["setting_changes"] >= 1, "the test wants a controller that acts"

    m1, o1, h1, x1, y1 = _job()
    _train(m1, o1, h1, x1, y1, 0, cut)
    buf = io.BytesIO()
    torch.save({"model": m1.state_dict(), "opt": o1.state_dict(), "mango": h1.state_dict()}, buf)
    h1.close()
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)

    m2, o2, h2, x2, y2 = _job(seed=0)
    h2.close()  # rebuilt after the optimizer is restored, as a resuming script does
    m2.load_state_dict(ckpt["model"])
    o2.load_state_dict(ckpt["opt"])
    h2 = AdaptiveCompression(
        o2,
        interval_steps=7,
        planned_steps=60,
        controller=LoRAvenController(target_error=0.02, cooldown_intervals=1, ranks=(2, 4, 8, 16)),
        energy_meter=ModelledMeter(flops_per_step=1e6),
    )
    h2.load_state_dict(ckpt["mango"])
    assert h2.job_id == "job-resume" and h2.steps == cut
    _train(m2, o2, h2, x2, y2, cut, total)

    for (name, p), q in zip(model.named_parameters(), m2.parameters(), strict=True):
        assert torch.equal(p, q), name
    _assert_same_optimizer(opt.state_dict(), o2.state_dict())
    assert _hook_view(h2) == _hook_view(hook)
    assert [d.setting for d in h2.decisions] == [d.setting for d in hook.decisions]
    hook.close()
    h2.close()


def test_load_applies_the_saved_setting_and_refuses_foreign_dicts(caplog: pytest.LogCaptureFixture) -> None:
    model, opt, hook, x, y = _job()
    _train(model, opt, hook, x, y, 0, 3)
    sd = hook.state_dict()
    sd["setting"] = CompressionSetting(rank=4, bits=8).model_dump()
    hook.load_state_dict(sd)  # the optimizer was not restored: the checkpoint's setting is applied
    assert opt.setting == CompressionSetting(rank=4, bits=8)
    assert "applying the checkpoint's" in caplog.text
    with pytest.raises(ValueError, match=r"AdaptiveCompression\.state_dict"):
        hook.load_state_dict(opt.state_dict())
    hook.close()
