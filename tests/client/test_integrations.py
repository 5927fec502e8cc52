"""The integrations with the real libraries on CPU: Lightning, HF Transformers' Trainer and Accelerate each
train a small model with MangoAdamW and the hook, save through their own checkpointing, and a resumed run
ends exactly where the uninterrupted one does (parameters, optimizer state, hook)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from client.compression.optimizer import MangoAdamW
from client.controllers import LoRAvenController
from client.hook import AdaptiveCompression, unwrap_optimizer
from client.protocol import CompressionSetting
from client.telemetry import ModelledMeter
from tests.client.test_hook_resume import _assert_same_optimizer, _hook_view

SETTING = CompressionSetting(rank=8, bits=4)


def _hook_args() -> dict[str, Any]:
    """A controller that acts on this scale (so the resumed decisions are tested) and a clock-free meter."""
    return {
        "controller": LoRAvenController(target_error=0.02, cooldown_intervals=1, ranks=(2, 4, 8, 16)),
        "energy_meter": ModelledMeter(flops_per_step=1e6),
        "job_id": "job-integ",
    }


def _data(n: int = 80) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 16, generator=gen), torch.randn(n, 64, generator=gen)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64))


def _same_params(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_unwrap_and_the_advice_for_a_foreign_optimizer() -> None:
    opt = MangoAdamW(_net().parameters())

    class Wrapper:  # accelerate's AcceleratedOptimizer keeps .optimizer, Lightning's ._optimizer
        def __init__(self, inner: Any, attr: str) -> None:
            setattr(self, attr, inner)

    assert unwrap_optimizer(Wrapper(Wrapper(opt, "_optimizer"), "optimizer")) is opt
    with pytest.raises(TypeError, match=r"MangoAdamW\(model.parameters\(\)"):
        AdaptiveCompression(torch.optim.AdamW(_net().parameters()))


# ------------------------------------------------------------------------------------------------ Lightning
def test_lightning_resume_from_its_checkpoint_is_bit_exact(tmp_path: Path) -> None:
    mod = pytest.importorskip("client.integrations.lightning")
    pl = mod.pl

    class Tiny(pl.LightningModule):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.net = _net()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return (self.net(x) - y).pow(2).mean()

        def configure_optimizers(self) -> MangoAdamW:
            return MangoAdamW(self.parameters(), lr=3e-3, setting=SETTING, min_compress_numel=512)

    x, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)  # 10 steps/epoch

    def trainer(callback: Any, *extra: Any) -> Any:
        return pl.Trainer(
            max_epochs=3,
            accelerator="cpu",
            devices=1,
            callbacks=[callback, *extra],
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path,
        )

    # interval 4: the epoch-1 checkpoint (step 10) falls mid-interval
    cb_a = mod.MangoCallback(interval_steps=4, planned_steps=30, **_hook_args())
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_epochs=1, save_top_k=-1)
    a = Tiny()
    trainer(cb_a, saver).fit(a, loader)
    assert cb_a.hook.steps == 30 and cb_a.hook.counters["setting_changes"] >= 1

    ckpt = next((tmp_path / "ckpt").glob("epoch=0-*.ckpt"))
    cb_b = mod.MangoCallback(interval_steps=4, planned_steps=30, **{**_hook_args(), "job_id": "other"})
    b = Tiny()
    tb = trainer(cb_b)
    tb.fit(b, loader, ckpt_path=ckpt)
    assert cb_b.hook.job_id == "job-integ" and cb_b.hook.steps == 30
    _same_params(a, b)
    _assert_same_optimizer(unwrap_optimizer(a.optimizers()).state_dict(), tb.optimizers[0].state_dict())
    assert _hook_view(cb_b.hook) == _hook_view(cb_a.hook)


# ------------------------------------------------------------------------------------------ HF Transformers
def test_hf_trainer_resume_is_bit_exact_and_the_callback_sees_the_loss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    transformers = pytest.importorskip("transformers")
    from client.integrations.hf import HOOK_FILE, MangoTrainerCallback

    transformers.logging.set_verbosity_error()
    cfg = transformers.GPT2Config(
        vocab_size=64,
        n_positions=16,
        n_embd=32,
        n_layer=1,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    ids = torch.randint(0, 64, (64, 16), generator=torch.Generator().manual_seed(2))
    data = [{"input_ids": row, "labels": row} for row in ids]

    def run(resume: str | None) -> tuple[Any, MangoTrainerCallback, Any]:
        torch.manual_seed(0)
        model = transformers.GPT2LMHeadModel(cfg)
        opt = MangoAdamW(model.parameters(), lr=3e-3, setting=SETTING, min_compress_numel=1024)
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path),
            max_steps=12,
            per_device_train_batch_size=4,
            gradient_accumulation_steps=2,  # 8 optimizer steps per epoch: the resume skips data mid-epoch
            save_strategy="steps",
            save_steps=5,
            logging_strategy="no",
            report_to="none",
            use_cpu=True,
            seed=0,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        cb = MangoTrainerCallback(interval_steps=3, **_hook_args())
        trainer = transformers.Trainer(
            model=model, args=args, train_dataset=data, optimizers=(opt, None), callbacks=[cb]
        )
        trainer.train(resume_from_checkpoint=resume)
        return model, cb, opt

    model_a, cb_a, opt_a = run(None)
    assert cb_a.hook.steps == 12 and (tmp_path / "checkpoint-5" / HOOK_FILE).is_file()
    losses = [r.loss for r in cb_a.hook.history]
    assert all(2.0 < x < 6.0 for x in losses), losses  # next-token cross-entropy over 64 symbols, ~ln 64
    view_a, sd_a = _hook_view(cb_a.hook), opt_a.state_dict()

    model_b, cb_b, opt_b = run(str(tmp_path / "checkpoint-5"))
    assert cb_b.hook.steps == 12
    _same_params(model_a, model_b)
    _assert_same_optimizer(sd_a, opt_b.state_dict())
    assert _hook_view(cb_b.hook) == view_a


def test_hf_callback_refuses_another_optimizer(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from client.integrations.hf import MangoTrainerCallback

    cb = MangoTrainerCallback()
    with pytest.raises(TypeError, match=r"optimizers=\(MangoAdamW"):
        cb.on_train_begin(None, None, None, optimizer=torch.optim.AdamW(_net().parameters()))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- Accelerate
def test_accelerate_save_state_resume_is_bit_exact(tmp_path: Path) -> None:
    accelerate = pytest.importorskip("accelerate")
    from client.integrations.accelerate import attach

    logging.getLogger("accelerate").setLevel(logging.ERROR)
    x, y = _data(256)
    total, cut = 40, 23

    def job() -> tuple[Any, Any, Any, AdaptiveCompression]:
        acc = accelerate.Accelerator(cpu=True)
        net = _net()
        opt = MangoAdamW(net.parameters(), lr=3e-3, setting=SETTING, min_compress_numel=512)
        net, opt = acc.prepare(net, opt)
        hook = attach(acc, opt, interval_steps=7, planned_steps=total, **_hook_args())
        return acc, net, opt, hook

    def train(acc: Any, net: Any, opt: Any, hook: AdaptiveCompression, a: int, b: int) -> None:
        for step in range(a, b):
            idx = torch.arange(step * 8, step * 8 + 32) % x.shape[0]
            loss = (net(x[idx]) - y[idx]).pow(2).mean()
            acc.backward(loss)
            opt.step()
            opt.zero_grad()
            hook.step(loss.detach())

    acc, net_a, opt_a, hook_a = job()
    train(acc, net_a, opt_a, hook_a, 0, cut)
    acc.save_state(str(tmp_path / "state"))
    train(acc, net_a, opt_a, hook_a, cut, total)
    assert hook_a.counters["setting_changes"] >= 1

    acc, net_b, opt_b, hook_b = job()
    acc.load_state(str(tmp_path / "state"))
    assert hook_b.steps == cut
    train(acc, net_b, opt_b, hook_b, cut, total)
    _same_params(net_a, net_b)
    _assert_same_optimizer(opt_a.state_dict(), opt_b.state_dict())
    assert _hook_view(hook_b) == _hook_view(hook_a)
