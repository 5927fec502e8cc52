"""Hardware cost profiles for the environment, and ``mango profile`` (the command that measures one).

The surrogate used to take each setting's time and energy from the CPU traces it was fitted on, so a
policy trained on it learned what settings cost on a 2-core CPU with tiny models. Here each episode draws a
hardware profile (:class:`HardwareSampler`) instead: one of the sample profiles in ``envs/profiles/`` (this
CPU measured, the H200 with the 85 M GPT and with lm-medium, the H200 at issue 12's targets), or a
log-space blend of two of them, with the optimizer's share of a training step drawn per episode. The
episode's interval time and energy ratios follow the profile (``1 + share * (step_ratio - 1)``), and the
observation carries the profile's features, exactly as the service receives them from a job
(:meth:`client.protocol.CostProfile.features`), so one policy learns to read the hardware.

``mango profile`` (:func:`main`) measures a profile on this machine for a named model (or a workload's
model) and its optimizer-step shapes, caches it by device and model signature, and can write it where the
environment finds it (``--out envs/profiles/<name>.json``).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tyro

from client.protocol import DEFAULT_GRID, CompressionSetting, CostProfile, ObservationSpec
from envs.workloads import get_workload

__all__ = [
    "PROFILE_DIR",
    "HardwareSampler",
    "blend",
    "load_profiles",
    "local_profile",
    "main",
    "ratio_grids",
]

log = logging.getLogger(__name__)

#: The sample profiles the environment draws from (JSON of :class:`CostProfile`, one per file).
PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
_SETTINGS = DEFAULT_GRID.all_settings()  # rank-major, the surrogate's flat grid order


def load_profiles(directory: str | Path | None = None) -> dict[str, CostProfile]:
    """Every ``*.json`` profile of ``directory`` (default :data:`PROFILE_DIR`) by file stem, sorted."""
    d = Path(directory) if directory is not None else PROFILE_DIR
    out = {p.stem: CostProfile.model_validate_json(p.read_text()) for p in sorted(d.glob("*.json"))}
    if not out:
        raise ValueError(f"no hardware profiles (*.json) in {d}; record one with `mango profile --out ...`")
    return out


def ratio_grids(profile: CostProfile) -> tuple[np.ndarray, np.ndarray]:
    """``(step-time ratios, energy ratios)`` to AdamW over the whole grid, float64 ``[R*B*G]``."""
    t = np.array([profile.step_ratio(s) for s in _SETTINGS], dtype=np.float64)
    e = np.array([profile.energy_ratio(s) for s in _SETTINGS], dtype=np.float64)
    return t, e


def blend(a: CostProfile, b: CostProfile, alpha: float, name: str = "") -> CostProfile:
    """A modelled profile between ``a`` (``alpha = 0``) and ``b`` (``alpha = 1``), geometric in each ratio."""
    settings = {}
    for s in _SETTINGS:
        ra, rb = a.step_ratio(s), b.step_ratio(s)
        ea, eb = a.energy_ratio(s), b.energy_ratio(s)
        settings[s.label()] = {
            "step_s": math.exp((1 - alpha) * math.log(ra) + alpha * math.log(rb)),
            "energy_j": math.exp((1 - alpha) * math.log(max(ea, 1e-9)) + alpha * math.log(max(eb, 1e-9))),
        }
    return CostProfile.model_validate(
        {
            "device": name or f"blend({a.device}, {b.device}, {alpha:.2f})",
            "signature": "blend",
            "source": "modelled",
            "energy_source": "modelled",
            "n_params": a.n_params,
            "adamw_step_s": 1.0,
            "adamw_energy_j": 1.0,
            "settings": settings,
        }
    )


@dataclass(frozen=True)
class HardwareSampler:
    """Per-episode hardware draws of the surrogate (see the module docstring).

    :ivar profiles: profile names of :data:`PROFILE_DIR` to draw from (empty: all of them).
    :ivar fixed: always this profile (a name), no blends: for evaluation on one machine kind.
    :ivar blend_prob: probability of a log-space blend of two random profiles instead of one.
    :ivar share_range: log-uniform range of the optimizer's share of a training step, used when the drawn
        profile has no measured ``train_step_s`` (or ``resample_share`` is set).
    :ivar resample_share: draw the share even where the profile measured one (more variety).
    :ivar jitter: log-normal std of a per-episode factor on every non-identity ratio (profiling noise).
    :ivar match_device: draw each episode's profile (and a blend's partner) from the profiles of its
        workload's device class only: a GPU workload from those whose device is not a CPU, a CPU workload
        from the CPU ones (a class with no profile falls back to all). A real job's profile is measured on
        its own device and shapes, so its features say what kind of job it is; drawn independently of the
        workload, they say nothing about the loss response the policy must predict.
    :ivar hide_profile: probability that an episode's job sends no profile: its profile features are zeros
        (``has_profile = 0``, as :meth:`ObservationSpec.encode` writes them without one) while its costs
        still follow the drawn profile, and its first setting is chosen without one, as the hook chooses it.
        A job that sends none (``profile=None``, a DDP comm hook) is then no input the policy never saw.
    """

    profiles: tuple[str, ...] = ()
    fixed: str | None = None
    blend_prob: float = 0.3
    share_range: tuple[float, float] = (0.02, 0.6)
    resample_share: bool = True
    jitter: float = 0.1
    match_device: bool = False
    hide_profile: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.blend_prob <= 1.0:
            raise ValueError(f"blend_prob={self.blend_prob} must lie in [0, 1]")
        if not 0.0 <= self.hide_profile <= 1.0:
            raise ValueError(f"hide_profile={self.hide_profile} must lie in [0, 1]")
        lo, hi = self.share_range
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"share_range={self.share_range} must satisfy 0 < lo <= hi <= 1")

    def build(self) -> HardwareTables:
        """Load the profiles and precompute their grids (once per environment; :func:`_shipped_profiles`
        keeps both while the profile files stay as they are)."""
        every, grids = _shipped_profiles()
        names = (self.fixed,) if self.fixed else (self.profiles or tuple(every))
        for n in names:
            if n not in every:
                raise ValueError(f"unknown hardware profile {n!r}; known: {sorted(every)}")
        return HardwareTables(self, [every[n] for n in names], list(names), [grids[n] for n in names])


def _shipped_profiles() -> tuple[dict[str, CostProfile], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """:func:`load_profiles` of :data:`PROFILE_DIR` and each profile's :func:`ratio_grids`, kept while no
    profile file is added, removed or rewritten (each call stats the files: a profile written by ``mango
    profile --out`` during a run is read by the next environment, as before). The grids cost about as much
    as the rest of an environment's construction, and a vectorized trainer builds dozens. The profiles are
    frozen and the grids read-only, so environments share them."""
    files = tuple((f.name, *_stat(f)) for f in sorted(PROFILE_DIR.glob("*.json")))
    return _load_shipped(str(PROFILE_DIR), files)


@functools.lru_cache(maxsize=1)
def _load_shipped(
    directory: str, files: tuple[tuple[str, int, int], ...]
) -> tuple[dict[str, CostProfile], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The work of :func:`_shipped_profiles`, cached by the directory and its files' (name, mtime, size)."""
    every = load_profiles(directory)
    grids = {}
    for name, prof in every.items():
        t, e = ratio_grids(prof)
        t.flags.writeable = e.flags.writeable = False
        grids[name] = (t, e)
    return every, grids


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


class HardwareTables:
    """The loaded profiles of a :class:`HardwareSampler` and the per-episode draw (:meth:`draw`)."""

    def __init__(
        self,
        sampler: HardwareSampler,
        profiles: list[CostProfile],
        names: list[str],
        grids: list[tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        """``grids``: each profile's :func:`ratio_grids` where the caller has them (computed otherwise)."""
        self.sampler = sampler
        self.profiles = profiles
        self.names = names
        if grids is None:
            grids = [ratio_grids(p) for p in profiles]
        self.log_t = np.log(np.stack([g[0] for g in grids]))  # [P, S]
        self.log_e = np.log(np.maximum(np.stack([g[1] for g in grids]), 1e-9))
        self.share = [p.optimizer_share for p in profiles]
        cpu = [i for i, p in enumerate(profiles) if p.device.lower().startswith("cpu")]
        gpu = [i for i in range(len(profiles)) if i not in cpu]
        every = list(range(len(profiles)))
        #: candidate profile indices per workload device (``match_device``; all of them otherwise)
        self.by_device: dict[str | None, list[int]] = {None: every, "cpu": every, "gpu": every}
        if sampler.match_device:
            self.by_device.update(cpu=cpu or every, gpu=gpu or every)
        self.off = DEFAULT_GRID.all_settings().index(
            DEFAULT_GRID.setting(DEFAULT_GRID.action(CompressionSetting.off()))
        )
        self.feature_idx = [
            _SETTINGS.index(DEFAULT_GRID.setting(DEFAULT_GRID.action(CompressionSetting.parse(lb))))
            for lb in CostProfile.FEATURE_SETTINGS
        ]

    def draw(
        self, rng: np.random.Generator, device: str | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        """``(interval-time ratios [S], energy ratios [S], profile features [F], label)`` of one episode of
        a workload on ``device`` (``"cpu"``/``"gpu"``; it restricts the profiles with ``match_device``).

        A fixed number of draws per call for one sampler (so episodes stay aligned across backends); a
        sampler with ``hide_profile > 0`` draws one more. Hidden profiles have all-zero features and a label
        ending in ``(hidden)``.
        """
        s = self.sampler
        u = rng.random(6)
        cand = self.by_device[device]
        p = len(cand)
        i = cand[min(int(u[0] * p), p - 1)]
        j = cand[min(int(u[1] * p), p - 1)]
        mix = u[2] if (p > 1 and u[3] < s.blend_prob and not s.fixed) else 0.0
        log_t = (1 - mix) * self.log_t[i] + mix * self.log_t[j]
        log_e = (1 - mix) * self.log_e[i] + mix * self.log_e[j]
        jit = math.exp(s.jitter * math.sqrt(-2 * math.log(max(u[4], 1e-12))) * math.cos(2 * math.pi * u[5]))
        step_t = np.exp(log_t) * jit
        step_e = np.exp(log_e) * jit
        step_t[self.off] = 1.0
        step_e[self.off] = 1.0
        measured = self.share[i] if mix == 0.0 else None
        if measured is not None and not s.resample_share:
            share = measured
        else:
            lo, hi = s.share_range
            share = math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * rng.random())
        time_ratio = 1.0 + share * (step_t - 1.0)
        energy_ratio = 1.0 + share * (step_e - 1.0)
        feats = [1.0, share, 1.0] + [math.log2(max(step_t[k], 1e-6)) / 4.0 for k in self.feature_idx]
        label = self.names[i] if mix == 0.0 else f"{self.names[i]}~{self.names[j]}@{mix:.2f}"
        if s.hide_profile > 0.0 and rng.random() < s.hide_profile:
            feats = [0.0] * len(feats)
            label += " (hidden)"
        return time_ratio, energy_ratio, np.asarray(feats, dtype=np.float64), label


#: Issue 12's H200 table (GPT-2-small-sized parameter set, 124.5 M parameters, torch 2.11 / triton 3.6, the
#: kernels before the grouped GPU step): setting -> (step ms, energy mJ per step). Fused AdamW: 1.03 ms,
#: 601 mJ.
ISSUE12_H200: dict[str, tuple[float, float]] = {
    "r0/b32/g0": (0.97, 661.0),
    "r0/b8/g0": (1.23, 881.0),
    "r0/b4/g0": (3.85, 1875.0),
    "r4/b8/g0": (120.5, 15633.0),
    "r8/b4/g0": (109.4, 11722.0),
    "r32/b4/g0": (101.5, 14362.0),
    "r64/b8/g0": (128.3, 11110.0),
    "r0/b8/g0.5": (95.1, 14047.0),
}


def modelled_h200(target: bool = False) -> CostProfile:
    """The H200 profile *modelled* from issue 12's table until a measured one replaces it.

    Settings the table lacks take their class's figure: 16, 3 and 2 bits and gamma > 0 ran tensor by tensor
    like ``r0/b8/g0.5`` (issue 12: only rank 0 at 8 or 32 bits with gamma 0 was fused). ``target=True``
    models issue 12's goals instead (every setting <= 1.25x AdamW, r0/b8 0.75x, r0/b4 0.8x, energy <= 1x at
    <= 4 B/param): the hardware the policy meets once the grouped GPU step lands.
    """
    adamw_ms, adamw_mj = 1.03, 601.0
    slow = ISSUE12_H200["r0/b8/g0.5"]
    settings: dict[str, dict[str, float]] = {}
    for s in _SETTINGS:
        label = s.label()
        if target:
            if s.rank == 0 and s.gamma == 0 and s.bits == 8:
                r = 0.75
            elif s.rank == 0 and s.gamma == 0 and s.bits <= 4:
                r = 0.8
            elif s.is_off:
                r = 0.95
            else:
                r = 1.2
            ms, mj = r * adamw_ms, min(r, 1.0) * adamw_mj
        elif label in ISSUE12_H200:
            ms, mj = ISSUE12_H200[label]
        elif s.rank == 0 and s.gamma == 0 and s.bits in (32, 8, 4):
            ms, mj = ISSUE12_H200[label] if label in ISSUE12_H200 else ISSUE12_H200["r0/b8/g0"]
        elif s.rank > 0:
            near = min(
                (k for k in ISSUE12_H200 if not k.startswith("r0/")),
                key=lambda k: abs(math.log2(int(k.split("/")[0][1:])) - math.log2(s.rank)),
            )
            ms, mj = ISSUE12_H200[near]
        else:
            ms, mj = slow
        settings[label] = {"step_s": ms / 1e3, "energy_j": mj / 1e3}
    note = (
        "MODELLED, not measured: issue 12's H200 goals (the grouped GPU step), for training variety"
        if target
        else "MODELLED from issue 12's H200 table (old per-tensor kernels; 124.5 M parameters); replace with "
        "`python -m mango_cli profile --model gpt-85m --out envs/profiles/h200.json` on the H200"
    )
    return CostProfile.model_validate(
        {
            "device": "NVIDIA H200 (modelled: issue 12 goals)"
            if target
            else "NVIDIA H200 (modelled: issue 12)",
            "signature": "gpt2-small-124m",
            "source": "modelled",
            "energy_source": "nvml",
            "n_params": 124_475_904,
            "adamw_step_s": adamw_ms / 1e3,
            "adamw_energy_j": adamw_mj / 1e3,
            "settings": settings,
            "note": note,
        }
    )


def local_profile(training: Any = None) -> CostProfile | None:
    """The sample profile of the machine the training backend runs on: ``cpu-dev-2core`` on a CPU, the
    H200's ``h200-gpt85m`` (the GPU workloads' 85 M model; else ``h200``) on CUDA; ``None`` if the file is
    missing."""
    import torch  # lazy on purpose: the surrogate path imports this module without torch

    device = getattr(training, "device", "auto") if training is not None else "auto"
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    names = ("h200-gpt85m", "h200") if cuda else ("cpu-dev-2core",)
    for n in names:
        path = PROFILE_DIR / f"{n}.json"
        if path.exists():
            return CostProfile.model_validate_json(path.read_text())
    return None


assert len(ObservationSpec.PROFILE_FEATURES) == 3 + len(CostProfile.FEATURE_SETTINGS), "update envs.hardware"


# ------------------------------------------------------------------------------------------ mango profile
def _train_step(model: Any, device: Any, batch: int, seq: int) -> Any:
    """One forward + backward + fused/foreach AdamW step of ``model`` (bf16 on CUDA) on a random batch: bytes
    of ``seq`` tokens for a byte LM, ``batch`` feature vectors and class labels for the digits MLP."""
    import torch  # lazy on purpose: the surrogate path imports this module without torch

    from client.profile import reference_adamw  # lazy on purpose: torch
    from envs.models import DigitsMLP  # lazy on purpose: torch

    opt = reference_adamw(model.parameters(), lr=1e-4)
    gen = torch.Generator(device="cpu").manual_seed(0)
    if isinstance(model, DigitsMLP):
        n_in, n_out = model.net[0].in_features, model.net[-1].out_features
        inputs = torch.randn(batch, n_in, generator=gen).to(device)
        targets = torch.randint(0, n_out, (batch,), generator=gen).to(device)
    else:
        x = torch.randint(0, 256, (batch, seq + 1), generator=gen).to(device)
        inputs, targets = x[:, :-1], x[:, 1:]

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model.loss(inputs, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


@dataclass
class ProfileArgs:
    """Measure each setting's optimizer step time and energy for a model on this machine (a cost profile)."""

    model: str = "lm-small"
    """model preset of envs.models"""
    workload: str | None = None
    """take the model (and batch shape) from this workload"""
    device: str = "auto"
    """auto (CUDA if present), cpu, cuda, cuda:1"""
    steps: int = 10
    """timed optimizer steps per setting"""
    warmup: int = 3
    """untimed steps before timing"""
    settings: str = ""
    """comma list of setting labels ('': client.profile.PROFILE_SETTINGS, a covering subset of the grid)"""
    batch_size: int = 16
    """training-step batch (for the optimizer's share of a step)"""
    seq_len: int = 64
    """training-step sequence length"""
    train_step: bool = True
    """time a training step too (--no-train-step: skip it)"""
    min_compress_numel: int | None = None
    """MangoAdamW min_compress_numel (default: the workload's, else 4096)"""
    energy: Literal["auto", "modelled"] = "auto"
    """energy meter: the best available, or the model"""
    threads: int | None = None
    """torch CPU threads"""
    force: bool = False
    """measure again even if cached"""
    out: str = ""
    """also write the profile JSON here (e.g. envs/profiles/x.json)"""


def main(argv: list[str] | None = None) -> int:
    """``mango profile``: measure the cost profile of a model's optimizer step on this machine."""
    import torch  # lazy on purpose: the surrogate path imports this module without torch

    from client.profile import PROFILE_SETTINGS, cached_profile  # lazy on purpose: torch
    from envs.models import build_model  # lazy on purpose: torch

    args = tyro.cli(ProfileArgs, args=argv, prog="mango profile", description=ProfileArgs.__doc__)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else None
    dev = dev or torch.device(args.device)
    model_name, batch, seq, mcn = args.model, args.batch_size, args.seq_len, 4096
    if args.workload:
        w = get_workload(args.workload)
        model_name, batch, mcn = w.model, w.batch_size, w.min_compress_numel
        seq = w.seq_len or seq
        model = w.build_model(0).to(dev)
    else:
        model = build_model(model_name, 0).to(dev)
    if args.min_compress_numel is not None:
        mcn = args.min_compress_numel
    train = None
    if args.train_step and hasattr(model, "loss"):
        seq = min(seq, model.cfg.block_size) if hasattr(model, "cfg") else seq
        train = _train_step(model, dev, batch, seq)
    t0 = time.perf_counter()
    prof = cached_profile(
        list(model.parameters()),
        device=dev,
        force=args.force,
        settings=[s.strip() for s in args.settings.split(",") if s.strip()] or list(PROFILE_SETTINGS),
        steps=args.steps,
        warmup=args.warmup,
        min_compress_numel=mcn,
        train_step=train,
        energy=args.energy,
        note=(
            f"mango profile --model {model_name}: {args.steps} timed steps after {args.warmup} warm-ups; "
            f"train step batch {batch} x {seq}; torch {torch.__version__}"
        ),
    )
    wall_s = time.perf_counter() - t0
    share = prof.optimizer_share
    print(f"device {prof.device}, signature {prof.signature}, {prof.n_params:,} parameters")
    print(f"profile wall time {wall_s:.1f} s (a cache hit, or a job's one-time wait before its first step)")
    print(
        f"AdamW step {1e3 * prof.adamw_step_s:.3f} ms, energy {prof.energy_source}"
        + (f", training step {1e3 * prof.train_step_s:.2f} ms (AdamW share {share:.1%})" if share else "")
    )
    print("| setting | step ms | vs AdamW | energy mJ | state B/param |")
    print("|---|---|---|---|---|")
    for label, c in prof.settings.items():
        e = f"{1e3 * c.energy_j:.1f}" if c.energy_j is not None else "-"
        sb = f"{(c.state_bytes or 0) / prof.n_params:.3f}"
        print(f"| {label} | {1e3 * c.step_s:.3f} | {c.step_s / prof.adamw_step_s:.2f} | {e} | {sb} |")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(json.loads(prof.model_dump_json()), indent=1) + "\n")
        print(f"wrote {out}")
    return 0
