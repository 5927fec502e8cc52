"""What a setting change costs in loss: one job trained under schedules that differ only in when they switch.

Each schedule is ``A`` (static) or ``A>B`` (``A`` until ``--switch-at``, then ``MangoAdamW.apply_setting(B)``,
as the hook applies a policy's decision). Every run of a seed starts from the same weights and sees the same
batches, so the final validation loss differs only by the optimizer's path. ``A>B`` ending above both
``A`` and ``B`` means the change itself cost loss (the state conversion), not either setting.

Knobs: ``--model`` (an LM preset of :mod:`envs.models` whose matrices are wider than the ranks compared:
``lm-small`` is 128 wide), ``--steps``, ``--batch-size`` x ``--seq-len``, ``--lr`` (constant after a linear
``--warmup-steps``, default none), ``--switch-at``
(the step after which ``B`` applies; the demo's first decision lands after 20), ``--seeds``, ``--device``
(``auto``: CUDA if present), ``--batch-convert`` (the GPU's batched conversion on a CPU too).

Usage: ``python -m benchmarks.switch_loss --schedules r64/b4/g0 r64/b8/g0 "r64/b4/g0>r64/b8/g0"`` (prints a
markdown table; minutes on two CPU cores at the defaults).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import tyro

from client.compression import MangoAdamW
from client.protocol import CompressionSetting
from envs.data import ByteCorpus, load_corpus
from envs.models import ByteGPT, build_model
from envs.workloads import schedule_lr


@dataclass(frozen=True)
class Args:
    """Command line of ``python -m benchmarks.switch_loss``."""

    schedules: tuple[str, ...] = ("r64/b4/g0", "r64/b8/g0", "r64/b4/g0>r64/b8/g0")
    """``A`` or ``A>B`` setting labels; ``adamw`` is plain torch AdamW (the reference)"""
    model: str = "lm-small"
    steps: int = 300
    batch_size: int = 8
    seq_len: int = 64
    lr: float = 1e-3
    warmup_steps: int = 0
    """linear warm-up of the learning rate over the first steps (0: constant from the first step)"""
    switch_at: int = 20
    seeds: tuple[int, ...] = (0, 1)
    val_batches: int = 8
    device: str = "auto"
    batch_convert: bool | None = None
    """how ``apply_setting`` converts: None = the optimizer's choice (batched on a GPU, tensor by tensor on a
    CPU), True = batched (the GPU's path, on any device), False = tensor by tensor"""


def lr_at(args: Args, step: int) -> float:
    """The learning rate of ``step`` (0-based): ``lr * (step + 1) / warmup_steps`` during the warm-up, then
    ``lr``."""
    return schedule_lr(args.lr, step, total=args.steps, warmup_steps=args.warmup_steps)


def parse_schedule(text: str) -> tuple[CompressionSetting | None, CompressionSetting | None]:
    """``"A"`` -> ``(A, None)``, ``"A>B"`` -> ``(A, B)``, ``"adamw"`` -> ``(None, None)``; a bad label raises
    ``ValueError`` naming it."""
    if text == "adamw":
        return None, None
    parts = text.split(">")
    if len(parts) > 2 or not all(parts):
        raise ValueError(f"schedule {text!r}: give A or A>B (setting labels such as r64/b4/g0)")
    first = CompressionSetting.parse(parts[0])
    return first, (CompressionSetting.parse(parts[1]) if len(parts) == 2 else None)


def run(
    args: Args,
    schedule: str,
    seed: int,
    corpus: ByteCorpus,
    val: list[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
) -> float:
    """Train one run of ``schedule`` from seed ``seed``'s weights and batches; returns its mean loss on the
    fixed validation batches ``val`` (:func:`val_batches`)."""
    first, then = parse_schedule(schedule)
    model = build_model(args.model, seed).to(device)
    if not isinstance(model, ByteGPT):
        raise ValueError(f"--model {args.model!r} is not an LM preset")
    params = [p for p in model.parameters() if p.requires_grad]
    opt: torch.optim.Optimizer
    if first is None:
        opt = torch.optim.AdamW(params, lr=args.lr)
    else:
        opt = MangoAdamW(params, lr=args.lr, setting=first, seed=seed)
        opt.batch_convert = args.batch_convert
    gen = torch.Generator().manual_seed(seed)
    for step in range(args.steps):
        if step == args.switch_at and then is not None:
            assert isinstance(opt, MangoAdamW)
            opt.apply_setting(then)
        for group in opt.param_groups:
            group["lr"] = lr_at(args, step)
        x, y = corpus.get_batch("train", args.batch_size, args.seq_len, gen)
        loss = model.loss(x.to(device), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.mean_loss(val)


def val_batches(args: Args, corpus: ByteCorpus) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The validation batches every run is scored on (drawn once, from a fixed generator)."""
    vgen = torch.Generator().manual_seed(10_000)
    return [corpus.get_batch("val", args.batch_size, args.seq_len, vgen) for _ in range(args.val_batches)]


def main(argv: list[str] | None = None) -> None:
    args = tyro.cli(Args, args=argv)
    if args.warmup_steps < 0:
        raise SystemExit(f"--warmup-steps {args.warmup_steps}: give 0 (no warm-up) or more steps")
    for s in args.schedules:
        parse_schedule(s)  # every label checked before any training
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))  # fmt: skip
    corpus = load_corpus()
    val = val_batches(args, corpus)
    rows: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    for schedule in ("adamw", *args.schedules):
        rows[schedule] = [run(args, schedule, seed, corpus, val, device) for seed in args.seeds]
    ref = rows["adamw"]
    took = time.perf_counter() - t0
    how = {None: "default", True: "batched", False: "tensor by tensor"}[args.batch_convert]
    lr = f"lr {args.lr}" + (f" after {args.warmup_steps} warm-up steps" if args.warmup_steps else "")
    print(f"{args.model}, {args.steps} steps, batch {args.batch_size}x{args.seq_len}, {lr}, switch")
    print(f"after step {args.switch_at} ({how} conversion), seeds {list(args.seeds)}, {device}, {took:.0f} s")
    print()
    print("| schedule | final val loss per seed | mean excess over AdamW |")
    print("|---|---|---|")
    for schedule, losses in rows.items():
        excess = sum(v / r - 1.0 for v, r in zip(losses, ref, strict=True)) / len(losses)
        print(f"| {schedule} | {' / '.join(f'{v:.4f}' for v in losses)} | {100 * excess:+.2f} % |")


if __name__ == "__main__":
    main()
