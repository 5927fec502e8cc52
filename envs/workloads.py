"""Workload registry: the training jobs the environment simulates, split into training and held-out sets.

A :class:`Workload` is configuration as data: which model (an :mod:`envs.models` preset), which data, which
learning-rate schedule, how noisy, and how an episode is cut into control intervals. The environment, the
trace recorder, the surrogate and the reference-run cache all key on it (:meth:`Workload.key`), so two
workloads that differ in any knob never share a cached reference run or a fitted curve.

The split is the point of this module: a policy is trained on :data:`TRAIN_WORKLOADS` and evaluated on
:data:`HELDOUT_WORKLOADS`, which differ in model size, data (held-out workloads train on the *validation*
files of the stdlib corpus or on label-noised digits), learning-rate schedule and gradient noise (batch size),
so evaluation never sees a training workload.

Episode length: an episode runs one uncontrolled warm-up interval (``reset``) and then ``intervals`` control
intervals of ``steps_per_interval`` optimizer steps each. The defaults keep a training-backend episode under
about a minute on two CPU cores (``benchmarks/env_throughput.py`` measures it).

>>> from envs.workloads import get_workload, TRAIN_WORKLOADS
>>> w = get_workload(TRAIN_WORKLOADS[0])
>>> w.planned_steps == w.steps_per_interval * (w.intervals + 1)
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "GPU_WORKLOADS",
    "HELDOUT_WORKLOADS",
    "SCHEDULES",
    "SPLITS",
    "TRAIN_WORKLOADS",
    "VAL_WORKLOADS",
    "WORKLOADS",
    "Workload",
    "get_workload",
    "register_workload",
    "schedule_lr",
    "workloads_of",
]

Task = Literal["lm", "digits"]
SplitName = Literal["train", "val", "heldout"]
#: The splits, in the order a policy's life uses them: train on, select checkpoints on, test on.
SPLITS: tuple[str, ...] = ("train", "val", "heldout")
Device = Literal["cpu", "gpu"]
#: Learning-rate schedules :meth:`Workload.lr_at` knows (after the linear warm-up, if any).
SCHEDULES: tuple[str, ...] = ("constant", "cosine", "linear", "step")


def schedule_lr(
    lr: float, step: int, *, total: int, warmup_steps: int = 0, schedule: str = "constant", floor: float = 0.1
) -> float:
    """Learning rate of optimizer step ``step`` (0-based) of a run of ``total`` steps: a linear warm-up from
    ``lr / warmup_steps`` to ``lr`` over the first ``warmup_steps``, then one of :data:`SCHEDULES` over the
    rest: ``constant``; ``cosine`` or ``linear`` down to ``floor * lr`` at the last step; ``step`` (x0.3 at
    50 % and again at 80 % of the steps after the warm-up). The workloads, the demo and the benchmarks all
    train by it."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    t = min(max(step - warmup_steps, 0) / max(total - warmup_steps, 1), 1.0)
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t)))
    if schedule == "linear":
        return lr * (1.0 - (1.0 - floor) * t)
    if schedule == "step":
        return lr * (0.3 ** (int(t >= 0.5) + int(t >= 0.8)))
    raise ValueError(f"schedule={schedule!r}; choose one of {SCHEDULES}")


@dataclass(frozen=True)
class Workload:
    """One training job: model, data, optimizer hyper-parameters and episode shape.

    :ivar name: registry key, ``[a-z0-9-]``.
    :ivar split: ``"train"`` (a policy may train on it), ``"val"`` (checkpoint selection only) or
        ``"heldout"`` (the test split: final evaluation only).
    :ivar task: ``"lm"`` (next-byte prediction on the stdlib corpus) or ``"digits"`` (8x8 digit classifier).
    :ivar model: :func:`envs.models.build_model` preset name (``"lm-tiny"``, ``"lm-small"``, ``"lm-medium"``,
        ``"digits-mlp"``); the size knob.
    :ivar model_overrides: ``GPTConfig`` fields changed on the preset, as ``(("n_embd", 96), ...)``: sizes
        between the presets (``lm-medium`` takes seconds per step on two CPU cores, too slow for episodes).
    :ivar data: ``"stdlib-train"`` / ``"stdlib-val"`` (which file split of the byte corpus the job trains on;
        held-out LM workloads use the validation files, so their data are disjoint) or ``"digits"``.
    :ivar corpus_bytes: ``max_bytes`` passed to :func:`envs.data.load_corpus` (LM only).
    :ivar batch_size: examples per step; smaller batches give noisier gradients (the noise knob).
    :ivar seq_len: bytes per LM window (LM only).
    :ivar lr: peak learning rate.
    :ivar schedule: one of :data:`SCHEDULES`: ``constant``; ``cosine`` to ``lr_floor * lr``; ``linear`` to
        ``lr_floor * lr``; ``step`` (x0.3 at 50 % and again at 80 % of the planned steps).
    :ivar warmup_steps: linear warm-up from ``lr / warmup_steps`` before the schedule starts.
    :ivar lr_floor: final fraction of ``lr`` for the decaying schedules.
    :ivar weight_decay: AdamW decoupled weight decay.
    :ivar label_noise: fraction of training labels replaced by a seeded random class (digits only): a
        noise knob the policy must not mistake for compression damage.
    :ivar steps_per_interval: optimizer steps per control interval (> 0).
    :ivar intervals: control intervals per episode (> 0), after one warm-up interval.
    :ivar min_compress_numel: ``MangoAdamW(min_compress_numel=...)``: tensors smaller than this keep exact
        fp32 state. Small models need a small threshold or nothing gets compressed.
    :ivar device: ``"cpu"`` (recorded on the dev machine) or ``"gpu"`` (recorded on a GPU with
        ``mango record --device cuda --clock wall``; too slow for a CPU). A split's default pool
        (:func:`workloads_of`) holds only CPU workloads; the surrogate adds GPU ones once it has their traces.
    :ivar description: one line for tables.
    """

    name: str
    split: SplitName
    task: Task
    model: str
    data: str
    batch_size: int
    lr: float
    schedule: str
    steps_per_interval: int
    intervals: int
    seq_len: int = 0
    model_overrides: tuple[tuple[str, int], ...] = ()
    corpus_bytes: int = 1_500_000
    warmup_steps: int = 0
    lr_floor: float = 0.1
    weight_decay: float = 0.01
    label_noise: float = 0.0
    min_compress_numel: int = 1024
    device: Device = "cpu"
    description: str = ""

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"workload {self.name!r}: split={self.split!r} must be one of {SPLITS}")
        if self.device not in ("cpu", "gpu"):
            raise ValueError(f"workload {self.name!r}: device={self.device!r} must be 'cpu' or 'gpu'")
        if self.task not in ("lm", "digits"):
            raise ValueError(f"workload {self.name!r}: task={self.task!r} must be 'lm' or 'digits'")
        if self.steps_per_interval < 1:
            raise ValueError(
                f"workload {self.name!r}: steps_per_interval={self.steps_per_interval}; an interval needs "
                ">= 1 optimizer step (10-25 keeps training-backend episodes short)"
            )
        if self.intervals < 1:
            raise ValueError(f"workload {self.name!r}: intervals={self.intervals} must be >= 1")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"workload {self.name!r}: schedule={self.schedule!r}; choose one of {SCHEDULES}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"workload {self.name!r}: lr={self.lr} must be positive and finite")
        if self.batch_size < 1:
            raise ValueError(f"workload {self.name!r}: batch_size={self.batch_size} must be >= 1")
        if self.task == "lm" and self.seq_len < 2:
            raise ValueError(f"workload {self.name!r}: an LM workload needs seq_len >= 2")
        if not 0.0 <= self.label_noise < 1.0:
            raise ValueError(f"workload {self.name!r}: label_noise={self.label_noise} must lie in [0, 1)")

    @property
    def planned_steps(self) -> int:
        """Optimizer steps of a whole episode: the warm-up interval plus ``intervals`` control intervals."""
        return self.steps_per_interval * (self.intervals + 1)

    def with_overrides(self, **changes: Any) -> Workload:
        """A copy with some knobs changed (validated again); e.g. ``w.with_overrides(intervals=4)``."""
        return dataclasses.replace(self, **changes)

    def lr_at(self, step: int) -> float:
        """Learning rate for optimizer step ``step`` (0-based) of an episode of :attr:`planned_steps`."""
        return schedule_lr(
            self.lr,
            step,
            total=self.planned_steps,
            warmup_steps=self.warmup_steps,
            schedule=self.schedule,
            floor=self.lr_floor,
        )

    def config(self) -> dict[str, Any]:
        """Every knob as a JSON-able dict (the description excluded: it does not change a run)."""
        d = dataclasses.asdict(self)
        d.pop("description")
        if d["device"] == "cpu":  # the default stays out of the key: CPU workloads keep their cached runs
            d.pop("device")
        d["model_overrides"] = [list(kv) for kv in self.model_overrides]
        return d

    def build_model(self, seed: int) -> Any:
        """The workload's model with a seeded initialization (:func:`envs.models.build_model`)."""
        from envs.models import build_model  # late: keeps the registry importable without torch work

        return build_model(self.model, seed, **dict(self.model_overrides))

    def key(self) -> str:
        """Content hash of :meth:`config` (16 hex chars): identical knobs, identical key."""
        blob = json.dumps(self.config(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


#: name -> Workload, every registered workload.
WORKLOADS: dict[str, Workload] = {}


def register_workload(w: Workload, *, replace: bool = False) -> Workload:
    """Add a workload to :data:`WORKLOADS` (``replace=True`` to overwrite one of the same name)."""
    if w.name in WORKLOADS and not replace:
        raise ValueError(f"workload {w.name!r} is already registered; pass replace=True to overwrite it")
    WORKLOADS[w.name] = w
    return w


def get_workload(name: str | Workload) -> Workload:
    """Look a workload up by name (a :class:`Workload` passes through); ``ValueError`` lists the names."""
    if isinstance(name, Workload):
        return name
    try:
        return WORKLOADS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown workload {name!r}; known: train {list(TRAIN_WORKLOADS)}, "
            f"held-out {list(HELDOUT_WORKLOADS)}"
        ) from None


def workloads_of(split: str, *, gpu: bool = False) -> tuple[str, ...]:
    """Names of the CPU workloads of a split: ``"train"``, ``"val"``, ``"heldout"`` or ``"all"``.

    ``gpu=True`` adds the split's GPU workloads (``"gpu"`` alone names every GPU workload).
    """
    if split == "gpu":
        return tuple(n for n, w in WORKLOADS.items() if w.device == "gpu")
    if split != "all" and split not in SPLITS:
        raise ValueError(f"split={split!r}; choose one of {(*SPLITS, 'all', 'gpu')}")
    return tuple(
        n for n, w in WORKLOADS.items() if (split == "all" or w.split == split) and (gpu or w.device == "cpu")
    )


# --- the registry -------------------------------------------------------------------------------------------
# Step costs on one CPU thread (process time, fwd+bwd / MangoAdamW step): lm-tiny ~17 / 3-20 ms at batch 16,
# the 96-wide "mid" size ~31 / 4-38 ms at batch 12, lm-small ~45 / 7-90 ms at batch 8, digits ~1 ms.
# Training split: two LM sizes on the corpus's training files plus the clean digits MLP.
register_workload(
    Workload(
        name="lm-tiny-cosine",
        split="train",
        task="lm",
        model="lm-tiny",
        data="stdlib-train",
        batch_size=16,
        seq_len=64,
        lr=3e-3,
        schedule="cosine",
        warmup_steps=8,
        steps_per_interval=12,
        intervals=12,
        description="byte LM, tiny (0.12 M), stdlib train files, cosine",
    )
)
register_workload(
    Workload(
        name="lm-small-constant",
        split="train",
        task="lm",
        model="lm-small",
        data="stdlib-train",
        batch_size=8,
        seq_len=64,
        lr=2e-3,
        schedule="constant",
        warmup_steps=12,
        steps_per_interval=10,
        intervals=12,
        description="byte LM, small (0.84 M), stdlib train files, warm-up + constant",
    )
)
register_workload(
    Workload(
        name="digits-mlp-cosine",
        split="train",
        task="digits",
        model="digits-mlp",
        data="digits",
        batch_size=64,
        lr=3e-3,
        schedule="cosine",
        steps_per_interval=20,
        intervals=12,
        description="digits MLP, clean labels, cosine",
    )
)
# Held-out split: another size, the validation files, other schedules, noisier gradients / labels.
register_workload(
    Workload(
        name="lm-mid-linear",
        split="heldout",
        task="lm",
        model="lm-tiny",
        model_overrides=(("n_layer", 3), ("n_head", 3), ("n_embd", 96)),
        data="stdlib-val",
        batch_size=12,
        seq_len=64,
        lr=2.5e-3,
        schedule="linear",
        warmup_steps=12,
        steps_per_interval=12,
        intervals=12,
        description="byte LM, mid (0.37 M: 3 x 96), stdlib val files, linear decay",
    )
)
register_workload(
    Workload(
        name="lm-tiny-step-noisy",
        split="heldout",
        task="lm",
        model="lm-tiny",
        data="stdlib-val",
        batch_size=6,
        seq_len=48,
        lr=4e-3,
        schedule="step",
        steps_per_interval=12,
        intervals=12,
        description="byte LM, tiny, stdlib val files, step decay, small batches",
    )
)
register_workload(
    Workload(
        name="digits-mlp-noisy",
        split="heldout",
        task="digits",
        model="digits-mlp",
        data="digits",
        batch_size=32,
        lr=5e-3,
        schedule="step",
        label_noise=0.2,
        steps_per_interval=20,
        intervals=12,
        description="digits MLP, 20 % label noise, step decay, smaller batches",
    )
)

# Issue 13: more variety the CPU can afford (the same two data sources, new shapes and schedules), and a
# validation split apart from the test split (checkpoints are selected on it, never on held-out workloads).
register_workload(
    Workload(
        name="lm-deep-cosine",
        split="train",
        task="lm",
        model="lm-tiny",
        model_overrides=(("n_layer", 4), ("n_head", 2), ("n_embd", 48)),
        data="stdlib-train",
        batch_size=12,
        seq_len=64,
        lr=3e-3,
        schedule="cosine",
        warmup_steps=10,
        steps_per_interval=12,
        intervals=12,
        description="byte LM, deep-narrow (4 x 48), stdlib train files, cosine",
    )
)
register_workload(
    Workload(
        name="lm-tiny-linear-lowlr",
        split="train",
        task="lm",
        model="lm-tiny",
        data="stdlib-train",
        batch_size=24,
        seq_len=32,
        lr=1e-3,
        schedule="linear",
        steps_per_interval=12,
        intervals=12,
        description="byte LM, tiny, short windows, low lr, linear decay",
    )
)
register_workload(
    Workload(
        name="digits-mlp-step-noisy",
        split="train",
        task="digits",
        model="digits-mlp",
        data="digits",
        batch_size=16,
        lr=2e-3,
        schedule="step",
        label_noise=0.1,
        steps_per_interval=20,
        intervals=12,
        description="digits MLP, 10 % label noise, small batches, step decay",
    )
)
register_workload(
    Workload(
        name="gru-tiny-linear",
        split="train",
        task="lm",
        model="gru-tiny",
        data="stdlib-train",
        batch_size=12,
        seq_len=64,
        lr=3e-3,
        schedule="linear",
        warmup_steps=8,
        steps_per_interval=12,
        intervals=12,
        description="byte GRU LM (0.11 M, a recurrent family), stdlib train files, linear decay",
    )
)
register_workload(
    Workload(
        name="lm-wide-constant",
        split="val",
        task="lm",
        model="lm-tiny",
        model_overrides=(("n_layer", 2), ("n_head", 4), ("n_embd", 112)),
        data="stdlib-train",
        batch_size=10,
        seq_len=48,
        lr=2e-3,
        schedule="constant",
        warmup_steps=10,
        steps_per_interval=12,
        intervals=12,
        description="byte LM, wide-shallow (2 x 112), stdlib train files, constant",
    )
)
register_workload(
    Workload(
        name="digits-mlp-linear",
        split="val",
        task="digits",
        model="digits-mlp",
        data="digits",
        batch_size=48,
        lr=4e-3,
        schedule="linear",
        label_noise=0.05,
        steps_per_interval=20,
        intervals=12,
        description="digits MLP, 5 % label noise, linear decay",
    )
)
# GPU workloads (issue 13, part 2): recorded on the H200 by `python -m envs.gpu_traces`; the GPU bench's 85 M
# byte GPT (12 x 768, batch 16 x 256) and the lm-medium class (the demo's model).
register_workload(
    Workload(
        name="gpu-gpt85m-cosine",
        split="train",
        task="lm",
        model="gpt-85m",
        data="stdlib-train",
        batch_size=16,
        seq_len=256,
        lr=3e-4,
        schedule="cosine",
        warmup_steps=20,
        steps_per_interval=25,
        intervals=12,
        min_compress_numel=4096,
        device="gpu",
        description="byte GPT 12 x 768 (85 M), batch 16 x 256, cosine (H200)",
    )
)
register_workload(
    Workload(
        name="gpu-lm-medium-cosine",
        split="train",
        task="lm",
        model="lm-medium",
        data="stdlib-train",
        batch_size=32,
        seq_len=256,
        lr=1e-3,
        schedule="cosine",
        warmup_steps=20,
        steps_per_interval=25,
        intervals=12,
        min_compress_numel=4096,
        device="gpu",
        description="byte LM lm-medium (6 x 192), batch 32 x 256, cosine (H200)",
    )
)

register_workload(
    Workload(
        name="gpu-gpt85m-val-linear",
        split="heldout",
        task="lm",
        model="gpt-85m",
        data="stdlib-val",
        batch_size=12,
        seq_len=256,
        lr=4e-4,
        schedule="linear",
        warmup_steps=20,
        steps_per_interval=25,
        intervals=12,
        min_compress_numel=4096,
        device="gpu",
        description="byte GPT 12 x 768 (85 M), stdlib val files, batch 12, linear decay (H200, test split)",
    )
)

#: Workloads a policy may train on (CPU-recorded; GPU ones join through the surrogate once recorded).
TRAIN_WORKLOADS: tuple[str, ...] = workloads_of("train")
#: Workloads checkpoints are selected on (never trained on, never the test split).
VAL_WORKLOADS: tuple[str, ...] = workloads_of("val")
#: Workloads reserved for the final evaluation (never seen in training or selection).
HELDOUT_WORKLOADS: tuple[str, ...] = workloads_of("heldout")
#: Workloads recorded on a GPU.
GPU_WORKLOADS: tuple[str, ...] = workloads_of("gpu")
