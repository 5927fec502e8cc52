"""What a demo run is asked to do: :class:`DemoArgs` (every ``mango demo`` flag) and the static baseline."""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from client.controllers import Schedule
from client.protocol import CompressionSetting
from envs.models import PRESETS
from envs.objectives import OBJECTIVE_PRESETS

__all__ = [
    "AUTO_LR",
    "AUTO_MODEL",
    "DEFAULT_STATICS",
    "FIXED_STATIC",
    "DemoArgs",
    "choose_static",
    "choose_statics",
    "parse_setting",
    "static_labels",
]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
#: The static baseline when no LM benchmark result is used (see ``DemoArgs.static_setting``).
FIXED_STATIC = "r0/b8/g0"
#: The static runs of ``--static-setting default`` per device. On a GPU, the best static setting measured per
#: preset on the 85 M-parameter job (BENCHMARKS.md, sessions 22-23): r0/b8/g0 under loss-, time- and
#: energy-first, r0/b4/g0 under balanced, r64/b4/g0 under memory-first, so the verdict weighs the adaptive
#: run against the best of them in hindsight. On a CPU one run (``make demo`` stays short).
DEFAULT_STATICS = {"cpu": FIXED_STATIC, "cuda": "r0/b8/g0,r0/b4/g0,r64/b4/g0"}
#: The default model per device (``--model auto``): big enough to matter on a GPU (issue 13: >= 85 M).
AUTO_MODEL = {"cpu": "lm-tiny", "cuda": "gpt-85m"}
#: The peak learning rate per model (``--lr 0``): in AdamW's stable range on the demo's recipe (batch 16 x 64,
#: 600 steps), measured with ``mango bench lm`` over three seeds (BENCHMARKS.md, issue 13, sessions 8-9: at
#: 3e-3 gpt-85m's AdamW ends 0.88 nats above its 3e-4 run and a setting's effect is lost in seed noise).
#: gpt-wide-100m, the held-out GPU job, takes gpt-85m's rate unmeasured (same family, similar size).
AUTO_LR = {"lm-tiny": 3e-3, "lm-small": 1e-3, "lm-medium": 1e-3, "gpt-85m": 3e-4, "gpt-wide-100m": 3e-4}


@dataclass
class DemoArgs:
    """The main job: policy service + adaptive compression vs AdamW vs a static setting, with a report."""

    out_dir: str = "demo_out"
    """Where summary.json, summary.md, report.png, decisions.jsonl, telemetry.jsonl, service.log go (created;
    git-ignored)."""
    model: str = "auto"
    """LM preset of envs.models; 'auto': lm-tiny (0.12 M parameters) on a CPU, gpt-85m (the GPU bench's 85 M
    byte GPT, 12 x 768) on a GPU. lm-small: 0.84 M parameters (slower per step than lm-tiny)."""
    steps: int = 600
    """Optimizer steps per run (rounded up to a whole number of control intervals); the demo trains three runs
    of this length (BENCHMARKS.md has its wall time)."""
    batch_size: int = 16
    """Windows per batch."""
    seq_len: int = 64
    """Bytes per window (at most the model's block size)."""
    lr: float = 0.0
    """Peak learning rate: linear warm-up, then cosine decay to a tenth of it. 0: the model's stable one
    (``AUTO_LR``: 3e-3 for lm-tiny, 3e-4 for gpt-85m)."""
    warmup_steps: int = 40
    """Linear warm-up steps."""
    weight_decay: float = 0.01
    """Decoupled weight decay (all three runs)."""
    interval_steps: int = 20
    """Optimizer steps per control interval: one telemetry record and one service request each. The shipped
    policy was trained on intervals of 10-20 steps."""
    eval_batches: int = 16
    """Fixed validation batches (held-out stdlib files) for the final validation loss."""
    corpus_bytes: int = 2_000_000
    """Size of the stdlib byte corpus (train + validation), cached under ~/.cache/mango."""
    objective: str = "balanced"
    """Objective preset of envs.objectives sent with every request (balanced: w_loss 5, w_memory 0.5,
    w_energy 0.25, w_time 0.25)."""
    policy: str = "default"
    """Service policy to ask: 'default' (the shipped learned policy, else the heuristic fallback), a learned
    policy's name or a heuristic (static, accordion, loraven, energy_aware)."""
    policy_dir: str = ""
    """Extra directory of learned policy artifacts for the service (MANGO_POLICY_DIR); '' for none (the
    shipped client/policy/default_policy/ is always loaded)."""
    static_setting: str = "default"
    """The static baseline, rR/bB/gG, or several separated by commas ("r0/b8/g0,r0/b4/g0,r64/b4/g0"): each
    is one more run per seed, and the verdict weighs the adaptive run against the best of them in hindsight
    (the lowest mean J). 'default': r0/b8/g0 on a CPU, the strong default of issue 13 (BENCHMARKS.md: on an
    H200 it matched AdamW's loss at 3 B/param and beat the first learned policy); on a GPU also r0/b4/g0 and
    r64/b4/g0, the best static settings measured there under balanced and memory-first (``DEFAULT_STATICS``).
    An entry may be a schedule, ``"r0/b8/g0:1>r0/b4/g0"`` (r0/b8/g0 for the first interval, then r0/b4/g0;
    :class:`client.controllers.Schedule`): an open-loop baseline, e.g. the adaptive run's opening without
    the policy.
    'auto' takes the setting
    from the newest results/lm-*.json of `mango bench lm`: the compressed setting with the fewest state bytes
    whose validation loss is within one percent of AdamW's (else the lowest loss); falls back to r0/b8/g0
    when there is no such file."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """'auto': the GPU when one is present, else the CPU."""
    threads: int = 1
    """torch CPU threads. 1 on a shared machine: with the load average at 8 on 2 cores, 2 threads made a
    step ~15x slower than 1 (OpenMP threads spin while waiting for a core)."""
    seed: int = 0
    """Seed of the initial weights and of the batch order (shared by the three runs)."""
    seeds: int = 1
    """How many seeds (``seed``, ``seed + 1``, ...) the three runs are repeated on. With more than one the
    verdict names a winner only when the 95 % CI of the paired J difference excludes 0 ("no clear winner"
    otherwise) and says on how many seeds the adaptive run won: on one seed a verdict cannot tell a setting
    from a seed's luck (BENCHMARKS.md: seed-to-seed spreads of several percent of the final loss)."""
    service_start_timeout_s: float = 180.0
    """Seconds to wait for the service's /readyz before giving up."""
    request_timeout_s: float = 5.0
    """PolicyClient per-attempt timeout, seconds (the answer is applied one interval later anyway)."""
    progress: bool = True
    """Progress bars (tqdm, on stderr); --no-progress prints one line per control interval instead."""
    short: bool = False
    """Smoke mode for tests: 40 steps of a batch-8 x 32-byte run, 10-step intervals, a small corpus
    (fields left at their defaults are shrunk; explicit flags win)."""

    def resolved(self) -> DemoArgs:
        """A copy with ``--short`` applied (to fields still at their defaults) and steps rounded up."""
        out = dataclasses.replace(self)
        if self.short:
            defaults = DemoArgs()
            small = {
                "steps": 40,
                "batch_size": 8,
                "seq_len": 32,
                "warmup_steps": 5,
                "interval_steps": 10,
                "eval_batches": 2,
                "corpus_bytes": 300_000,
            }
            for name, value in small.items():
                if getattr(self, name) == getattr(defaults, name):
                    setattr(out, name, value)
        out.steps = max(1, math.ceil(out.steps / out.interval_steps)) * out.interval_steps
        return out

    def check(self) -> None:
        """``ValueError`` naming each bad field and how to fix it."""
        if self.steps < 1 or self.interval_steps < 1:
            raise ValueError(f"steps={self.steps} and interval_steps={self.interval_steps} must be >= 1")
        if min(self.batch_size, self.seq_len, self.eval_batches, self.threads, self.seeds) < 1:
            raise ValueError("batch_size, seq_len, eval_batches, threads and seeds must all be >= 1")
        if not (self.lr >= 0 and math.isfinite(self.lr)):
            raise ValueError(
                f"lr={self.lr} must be a finite number > 0, or 0 for the model's default (AUTO_LR)"
            )
        if self.model != "auto" and self.model not in PRESETS:
            raise ValueError(f"model={self.model!r}; choose 'auto' or an LM preset: {sorted(PRESETS)}")
        if self.objective not in OBJECTIVE_PRESETS:
            raise ValueError(f"objective={self.objective!r}; choose one of {sorted(OBJECTIVE_PRESETS)}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' but no CUDA GPU is visible; use --device auto or cpu")
        if self.policy_dir and not Path(self.policy_dir).is_dir():
            raise ValueError(f"policy_dir={self.policy_dir!r} is not a directory")
        if self.static_setting not in ("auto", "default"):
            static_labels(self.static_setting)


def static_labels(spec: str) -> list[str]:
    """The canonical labels of a comma-separated ``--static-setting`` list (each a setting or a
    :class:`~client.controllers.Schedule`); ``ValueError`` names a bad or repeated entry (two runs of one
    setting would be one static run twice)."""
    labels: list[str] = []
    for part in spec.split(","):
        if not part.strip():
            raise ValueError(
                f"static_setting={spec!r}: an empty entry; give rR/bB/gG labels separated by commas"
            )
        label = Schedule.parse(part.strip()).label()
        if label in labels:
            raise ValueError(f"static_setting={spec!r}: {label} is given twice")
        labels.append(label)
    return labels


def choose_statics(
    spec: str, device_type: str = "cpu", results_dir: Path = ROOT / "results"
) -> list[tuple[Schedule, str]]:
    """The static baselines and why each was chosen: ``'default'`` is :data:`DEFAULT_STATICS` of the
    ``device_type`` (``"cpu"`` or ``"cuda"``), ``'auto'`` or one setting :func:`choose_static`, else one
    ``(schedule, "given on the command line")`` per entry of the comma-separated list. Each baseline is a
    :class:`~client.controllers.Schedule`; a plain setting is the schedule that holds it throughout."""
    why = "given on the command line"
    if spec == "default":
        spec = DEFAULT_STATICS[device_type]
        why = f"the default on {device_type} (DEFAULT_STATICS): the best static setting measured per preset"
    if "," not in spec and ">" not in spec:
        setting, one_why = choose_static(spec, results_dir)
        return [(Schedule.of(setting), one_why)]
    return [(Schedule.parse(label), why) for label in static_labels(spec)]


def parse_setting(label: str) -> CompressionSetting:
    """``"r8/b8/g0"`` (gamma optional) -> :class:`CompressionSetting`; ``ValueError`` says the format."""
    return CompressionSetting.parse(label)


def _mean_loss_ratios(rows: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """``(setting, mean of val loss / the same seed's AdamW val loss, state B/param)`` of every compressed
    setting of a ``mango bench lm`` JSON that stayed finite on every seed (older ones: one seed)."""
    base = {r.get("seed", 0): r["val_loss"] for r in rows if r["setting"] == "adamw"}
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["setting"] not in ("adamw", "off"):
            by.setdefault(r["setting"], []).append(r)
    out = []
    for label, rs in by.items():
        if all(r.get("finite", True) and r.get("seed", 0) in base for r in rs):
            ratio = sum(r["val_loss"] / base[r.get("seed", 0)] for r in rs) / len(rs)
            out.append((label, ratio, float(rs[0]["state_bytes_per_param"])))
    return out


def choose_static(spec: str, results_dir: Path = ROOT / "results") -> tuple[CompressionSetting, str]:
    """The static baseline and why it was chosen (see ``DemoArgs.static_setting``)."""
    if spec != "auto":
        setting = parse_setting(spec)
        why = (
            "fixed choice: the strong default r0/b8/g0 (issue 13: 8-bit block-wise state, no projection)"
            if setting.label() == FIXED_STATIC
            else "given on the command line"
        )
        return setting, why
    files = sorted(glob.glob(str(results_dir / "lm-*.json")))
    for path in reversed(files):
        try:
            doc = json.loads(Path(path).read_text())
            cands = _mean_loss_ratios(doc["rows"])
            if not cands:
                continue
            near = [c for c in cands if c[1] <= 1.01]
            best = min(near, key=lambda c: c[2]) if near else min(cands, key=lambda c: c[1])
            setting = parse_setting(best[0])
        except (OSError, ValueError, KeyError, StopIteration, TypeError) as exc:
            log.warning("skipping LM benchmark result %s: %s", path, exc)
            continue
        rule = "fewest state bytes within 1 % of AdamW's loss" if near else "lowest loss (none within 1 %)"
        return setting, f"from {Path(path).name} ({doc.get('command', 'mango bench lm')}): {rule}"
    return parse_setting(FIXED_STATIC), "fixed choice r0/b8/g0 (no results/lm-*.json from `mango bench lm`)"
