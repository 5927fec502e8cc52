"""``mango train``: PPO (stable-baselines3) with a TinyFormer features extractor on the vectorized surrogate.

Reads top to bottom (CleanRL style): arguments (:class:`TrainArgs`, one docstring per field) -> seeding ->
environments -> PPO -> periodic validation-split evaluation with best-model checkpointing -> export of
the best policy to a safetensors + JSON artifact (:mod:`agents.export`) that the policy service loads.

Example (the shipped default policy: 4-8 minutes on 2 shared CPU cores; the command is in its manifest)::

    mango train --total-timesteps 1000000 --eval-every 100000 --eval-episodes 32 --seed 0 --max-minutes 14 \
        --out runs/default --export-dir client/policy/default_policy --no-progress-bar

Outputs under ``--out``: ``tb/`` (TensorBoard: ``tensorboard --logdir runs``), ``best_model.zip`` (SB3, best
validation score), ``final_model.zip``, ``eval.jsonl`` (one line per evaluation), ``summary.json``, and the
artifact in ``--export-dir`` (default ``<out>/policy``).

**Validation** (every ``--eval-every`` steps): the deterministic policy plays ``--eval-episodes``
episodes per *validation* workload (:data:`envs.VAL_WORKLOADS`) per objective preset (seeds from
``--eval-seed``, disjoint from ``mango eval``'s default seeds), and so does every static setting of the
grid (once, at the start). The *score* is the mean over presets of ``(R_policy - R_best_static) /
sum(objective weights)``: the advantage of the mean
episode return over the best single static setting chosen in hindsight for that preset, in units that make
presets comparable; the model with the best score is kept and exported. Checkpoints are selected on the
validation split only, so ``mango eval``'s held-out (test) workloads never influence the shipped policy.
Episodes draw hardware cost profiles (:class:`envs.hardware.HardwareSampler`) and memory budgets.

**Reward scale.** Objective weights span two orders of magnitude (``w_loss`` 0.5-50) while the observation
carries them normalized to sum 1, so the return's scale is invisible to the critic. ``--reward-scale
objective`` (default) divides each episode's rewards by the sum of its objective weights (a positive
per-episode constant: the optimal policy of every episode is unchanged, the penalties' relative size
aside), and ``--norm-reward`` then applies SB3's running return normalization (``VecNormalize``,
observations untouched: they are already normalized by the spec and must stay identical to the service's).

**Backends.** ``surrogate`` (default): :class:`envs.SurrogateVecEnv`, tens of thousands of steps per second.
``training``: real training jobs (:class:`envs.CompressionEnv` with ``backend="training"``), seconds per
step: use it to fine-tune a surrogate-trained policy (``--init-from client/policy/default_policy``) with a
small budget; validation still runs on the surrogate.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from client.protocol import DEFAULT_GRID, CompressionSetting
from envs.workloads import workloads_of

__all__ = ["TrainArgs", "TrainResult", "main", "train"]

log = logging.getLogger(__name__)


def _count(args: list[str]) -> int:
    value = float(args[0])  # "2e6" reads as 2000000: step counts are easier to write in scientific form
    if value != int(value):
        raise ValueError(f"{args[0]!r} is not a whole number")
    return int(value)


#: An ``int`` flag that also accepts ``2e6`` (a whole number in scientific notation).
Count = Annotated[
    int,
    tyro.constructors.PrimitiveConstructorSpec(
        nargs=1,
        metavar="INT",
        instance_from_str=_count,
        is_instance=lambda x: isinstance(x, int),
        str_from_instance=lambda x: [str(x)],
    ),
]


@dataclass
class TrainArgs:
    """Train a PPO + TinyFormer compression-control policy and export it as a policy artifact."""

    total_timesteps: Count = 1_000_000
    """environment steps (control intervals, summed over envs); TinyFormer: 2-4 k steps/s on 2 shared cores"""
    n_envs: int = 64
    """episodes stepped side by side; each PPO rollout is n_envs * n_steps transitions"""
    seed: int = 0
    """seeds python, numpy, torch and the environments' episode draws"""
    extractor: Literal["tinyformer", "mlp"] = "tinyformer"
    """features extractor: tinyformer (exportable) or mlp (the same-size control, SB3 checkpoint only)"""
    d_model: int = 32
    """TinyFormer width (32: ~19 k parameters, ~75 KB fp32; must divide by n_heads)"""
    n_layers: int = 2
    """TinyFormer transformer blocks"""
    n_heads: int = 4
    """TinyFormer attention heads"""
    ff_mult: int = 2
    """TinyFormer MLP hidden width = ff_mult * d_model"""
    mlp_width: int = 0
    """MLP extractor width; 0 matches the TinyFormer encoder's parameter count"""
    lr: float = 1e-3
    """Adam learning rate (linearly annealed to 0 with --anneal-lr)"""
    anneal_lr: bool = True
    """anneal the learning rate linearly to 0 over the run"""
    n_steps: int = 32
    """steps per env per rollout (episodes are 12 intervals; 32 spans ~2.5 episodes per env)"""
    batch: int = 512
    """PPO minibatch size (must divide n_envs * n_steps for equal minibatches)"""
    n_epochs: int = 4
    """passes over each rollout"""
    gamma: float = 0.95
    """discount; episodes are 12 intervals and compression damage decays within a few"""
    gae_lambda: float = 0.9
    """GAE lambda"""
    clip_range: float = 0.2
    """PPO ratio clip"""
    ent_coef: float = 0.01
    """entropy bonus; the three categorical heads have 19 logits in all, 0.01 keeps them exploring"""
    vf_coef: float = 0.5
    """value loss weight"""
    max_grad_norm: float = 0.5
    """gradient clipping"""
    reward_scale: Literal["objective", "none"] = "objective"
    """divide rewards by the episode's objective weight sum (see the module docstring) or leave them"""
    norm_reward: bool = True
    """SB3 VecNormalize running normalization of rewards (observations are never normalized)"""
    eval_every: Count = 100_000
    """validation period in environment steps (0: only at the end)"""
    eval_episodes: int = 32
    """episodes per validation workload per objective preset in each evaluation"""
    eval_seed: int = 100_000
    """first seed of the evaluation episodes (mango eval uses 0.. by default: disjoint)"""
    out: str = "runs/ppo"
    """output directory (TensorBoard logs, checkpoints, summary)"""
    name: str = "tinyformer-ppo"
    """artifact name (the policy name clients ask for)"""
    version: str = ""
    """artifact version; default '<extractor>-s<seed>-<total_timesteps>'"""
    export_dir: str = ""
    """where to write the artifact ('' = <out>/policy; 'none' skips the export)"""
    backend: Literal["surrogate", "training"] = "surrogate"
    """surrogate (fast) or training (real jobs, for fine-tuning with --init-from)"""
    init_from: str | None = None
    """artifact (manifest, weights or directory) to start from; its architecture overrides --d-model etc."""
    prior_setting: str = ""
    """a setting (rR/bB/gG, e.g. r0/b8/g0) the fresh action heads prefer by --prior-logit: PPO starts from
    that fixed setting and leaves it where the return pays ('': uniform heads; not with --init-from)"""
    prior_logit: tuple[float, ...] = (3.0,)
    """logit added to the prior setting's rank, bits and gamma entries of the action head's bias: one value
    for all three heads, or three (rank, bits, gamma), e.g. 3 1 3 for a weak bits prior"""
    bc_episodes: int = 0
    """surrogate backend: before PPO, clone the per-episode oracle on this many training episodes (every grid
    setting played on each, the best by J is its label; agents.imitation), so PPO starts from a policy that
    reads the job rather than from one setting (0: off; with --prior-setting the clone replaces the prior)"""
    bc_lr: float = 0.0
    """behaviour cloning's Adam learning rate (0: --lr); a clone fits best at ~1e-3 while PPO after it may
    want a smaller --lr"""
    bc_explore: float = 0.0
    """probability of a random setting in place of the label at each interval of the clone's input rollouts
    (agents.imitation.oracle_dataset): with 0 the current setting in the observation gives the label away and
    the clone learns to stay where it is"""
    bc_anchor: float = 0.0
    """weight of a cross-entropy term on the clone's labels kept during PPO (agents.imitation.CloneAnchor:
    4 minibatches after every rollout's update; 0: off), so PPO refines the clone rather than drifting from
    it where the reward's gradient is weak (loss-first)"""
    joint_head: bool = False
    """one categorical over the grid's settings instead of three heads (rank, bits, gamma): a setting is
    chosen as a whole, so behaviour cloning (--bc-episodes) fits the oracle's settings rather than each
    component's majority (an --init-from artifact fixes the head)"""
    bc_epochs: int = 5
    """passes of the behaviour cloning over its data"""
    train_interval_steps: int | None = None
    """training backend: optimizer steps per control interval (default: the workload's)"""
    train_intervals: int | None = None
    """training backend: control intervals per episode (default: the workload's)"""
    loss_credit: Literal["final", "interval"] = "final"
    """training reward: where the loss term is paid (envs.reward.RewardConfig.loss_credit): final (each
    interval pays K x the change of its loss term, so the return's loss part is the final loss's, as users
    judge a run) or interval (each interval pays its own term, the reward before issue 13's session 5)"""
    selection_score: Literal["final", "interval"] = "final"
    """what checkpoints are selected by on the validation split: final (the users' objective on the final
    loss, as mango eval and the demo score a run) or interval (the per-interval return, for comparison)"""
    profiles: str = ""
    """surrogate backend: comma list of the hardware profiles of envs/profiles/ that training and validation
    episodes draw from ('': every profile there). E.g. 'cpu-dev-2core,h200-gpt85m,h200-lm-medium' leaves out
    the modelled H200 target and trains on measured costs only"""
    match_hardware: bool = False
    """surrogate backend: draw a GPU workload's hardware profile from the GPU profiles only and a CPU
    workload's from the CPU ones (envs.hardware.HardwareSampler.match_device), so the profile features tell
    the policy what kind of job it runs, as a real job's measured profile does (default: independent draws)"""
    hide_profile: float = 0.0
    """surrogate backend: share of episodes whose job sends no cost profile (zero profile features, the first
    setting chosen without one; envs.hardware.HardwareSampler.hide_profile), so a job run with profile=None
    or through a DDP comm hook is no input the policy never saw (0: every job sends one)"""
    workloads: tuple[str, ...] = ()
    """surrogate backend: the training split's workloads episodes draw from, uniformly by entry, so a name
    given twice is drawn twice as often (empty: the whole training split, CPU and GPU, once each). E.g. the
    split with gpu-gpt85m-cosine and gpu-lm-medium-cosine given three times weights the H200 jobs 3x.
    Validation and test workloads are refused: they must stay unseen"""
    depth: tuple[float, float] = (0.0, 0.0)
    """surrogate backend: (lo, hi) of each training and validation episode's extra log-drop of the reference
    loss, a job that trains further than the recorded traces (envs.simulator.SurrogateEngine); (0, 0): the
    recorded curves. (0, 0.4) reaches the H200 demo's depth"""
    resample_share: bool = True
    """surrogate backend: draw each episode's optimizer share of a training step from the sampler's range
    even where the drawn profile measured one (envs.hardware.HardwareSampler.resample_share: more variety);
    --no-resample-share keeps the measured share (where a profile's measured share lies low in the range,
    as the GPU profiles' do, resampling prices a slower optimizer step higher than those jobs pay)"""
    opening: tuple[float, int] = (0.0, 1)
    """surrogate backend, PPO episodes only: (p, most) - with probability p an episode opens with a random
    first-decision candidate (client.controllers.FIRST_CANDIDATES) held for 1..most intervals before the
    policy's first decision, so it learns to leave a setting in force that it would not have chosen
    (envs.simulator.SurrogateEngine); (0, 1): every episode opens at the first decision, one interval. The
    behaviour clone's rollouts and the validation episodes keep the default"""
    threads: int = 1
    """torch intra-op threads (1 is fastest for these small batches and kind to a shared machine)"""
    max_minutes: float = 0.0
    """stop training early after this many wall-clock minutes (0: no limit); a guard for loaded machines that
    makes the run depend on the machine's speed when it triggers (recorded in the summary)"""
    progress_bar: bool = True
    """tqdm + rich progress bar"""


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    out_dir: Path
    manifest: Path | None
    best_score: float
    best_metrics: dict[str, Any]
    wall_s: float
    timesteps: int


# ----------------------------------------------------------------------------------------------- helpers
def _tinyformer_config(args: TrainArgs) -> Any:
    # lazy on purpose (here and below): torch, SB3 and gymnasium load only when training runs, not for --help
    from agents.tinyformer import TinyFormerConfig

    return TinyFormerConfig(
        d_model=args.d_model,
        n_layers=args.n_layers,
        n_heads=args.n_heads,
        ff_mult=args.ff_mult,
        joint=args.joint_head,
    )


def _check_args(args: TrainArgs) -> None:
    if args.total_timesteps < 1:
        raise ValueError(f"total_timesteps={args.total_timesteps} must be >= 1")
    if args.n_envs < 1 or args.n_steps < 1:
        raise ValueError("n_envs and n_steps must be >= 1")
    if args.bc_episodes < 0 or args.bc_epochs < 1 or args.bc_lr < 0 or args.bc_anchor < 0:
        raise ValueError(
            f"--bc-episodes {args.bc_episodes}, --bc-epochs {args.bc_epochs}, --bc-lr {args.bc_lr}, "
            f"--bc-anchor {args.bc_anchor}: give episodes >= 0, epochs >= 1, a learning rate >= 0 (0: --lr) "
            "and an anchor weight >= 0"
        )
    if not 0.0 <= args.bc_explore <= 1.0:
        raise ValueError(f"--bc-explore {args.bc_explore}: give a probability in [0, 1]")
    if args.bc_anchor and not args.bc_episodes:
        raise ValueError("--bc-anchor keeps PPO near the clone's labels: give --bc-episodes too")
    if args.batch < 2 or args.batch > args.n_envs * args.n_steps:
        raise ValueError(
            f"batch={args.batch} must be in [2, n_envs * n_steps = {args.n_envs * args.n_steps}]; "
            "lower --batch or raise --n-envs/--n-steps"
        )
    from envs.simulator import check_depth, check_opening  # lazy on purpose, like the imports below

    check_depth(args.depth)
    check_opening(args.opening)
    if args.workloads:
        if args.backend != "surrogate":
            raise ValueError("--workloads weights the surrogate's draws; the training backend runs its split")
        train_split = workloads_of("train", gpu=True)
        unknown = sorted({w for w in args.workloads if w not in train_split})
        if unknown:
            raise ValueError(f"--workloads {unknown} not in the training split {list(train_split)}")
    if args.extractor == "mlp" and args.init_from:
        raise ValueError("--init-from loads a TinyFormer artifact; it cannot initialize --extractor mlp")
    if args.prior_setting and args.init_from:
        raise ValueError("--prior-setting shapes fresh heads; --init-from loads trained ones: give one")
    if len(args.prior_logit) not in (1, 3):
        raise ValueError(
            f"--prior-logit takes one value or three (rank, bits, gamma), got {args.prior_logit}"
        )
    if args.prior_setting:
        try:
            DEFAULT_GRID.action(CompressionSetting.parse(args.prior_setting))
        except ValueError as exc:
            raise ValueError(f"--prior-setting {args.prior_setting!r} is not a grid setting: {exc}") from None


def hardware_draws(args: TrainArgs) -> Any:
    """The surrogate's per-episode hardware draws of ``--profiles`` (``"default"``: every profile)."""
    from envs.hardware import HardwareSampler

    names = tuple(p.strip() for p in args.profiles.split(",") if p.strip())
    if not names and not args.match_hardware and not args.hide_profile and args.resample_share:
        return "default"
    return HardwareSampler(
        profiles=names,
        match_device=args.match_hardware,
        hide_profile=args.hide_profile,
        resample_share=args.resample_share,
    )


def make_surrogate_env(args: TrainArgs) -> Any:
    """The vectorized training env: surrogate on the TRAIN workloads -> SB3 adapter -> monitor -> scaling."""
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

    from agents.vec import ObjectiveScaledVecReward
    from envs.reward import RewardConfig
    from envs.sb3 import SB3VecEnvAdapter
    from envs.surrogate import SurrogateVecEnv

    env = SurrogateVecEnv(
        num_envs=args.n_envs,
        workload=list(args.workloads) or None,
        split="train",
        hardware=hardware_draws(args),
        reward=RewardConfig(loss_credit=args.loss_credit),
        depth=args.depth,
        opening=args.opening,
    )
    venv: Any = SB3VecEnvAdapter(env, info_terms=False)
    venv = VecMonitor(venv)  # raw episode returns for rollout/ep_rew_mean
    if args.reward_scale == "objective":
        venv = ObjectiveScaledVecReward(venv)
    if args.norm_reward:
        venv = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=args.gamma)
    return venv


def make_training_env(args: TrainArgs) -> Any:
    """Real-training envs (one CompressionEnv per env slot) in a ``DummyVecEnv``."""
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from agents.vec import ObjectiveScaledReward
    from envs.env import CompressionEnv
    from envs.reward import RewardConfig

    def make() -> Any:
        env: Any = CompressionEnv(
            backend="training",
            split="train",
            interval_steps=args.train_interval_steps,
            intervals=args.train_intervals,
            reward=RewardConfig(loss_credit=args.loss_credit),
        )
        env = Monitor(env)
        if args.reward_scale == "objective":
            env = ObjectiveScaledReward(env)
        return env

    venv: Any = DummyVecEnv([make for _ in range(args.n_envs)])
    if args.norm_reward:
        venv = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=args.gamma)
    return venv


# ----------------------------------------------------------------------------------------------- main path
def train(args: TrainArgs, command: str = "") -> TrainResult:
    """Train, evaluate, checkpoint and export as configured by ``args`` (see the module docstring)."""
    _check_args(args)
    import torch
    from stable_baselines3 import PPO

    from agents.callbacks import HeldoutEvalCallback, WallClockLimit
    from agents.extractor import count_parameters, policy_kwargs, prefer_setting, reinit_extractor
    from agents.rollout import surrogate_id

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = dataclasses.asdict(args)
    log.info("mango train: %s", json.dumps(config, sort_keys=True))

    # --- seeding: python/numpy/torch through SB3's set_random_seed (PPO(seed=...)), env draws via VecEnv.seed
    torch.set_num_threads(args.threads)

    # --- architecture: an --init-from artifact fixes it
    init_model = None
    tf_config = _tinyformer_config(args)
    if args.init_from:
        from agents.export import tinyformer_from_artifact
        from client.policy.artifact import load_artifact

        init_model = tinyformer_from_artifact(load_artifact(args.init_from))
        tf_config = init_model.config
        config.update(
            {k: getattr(tf_config, k) for k in ("d_model", "n_layers", "n_heads", "ff_mult")}
            | {"joint_head": tf_config.joint}
        )
        log.info("initializing from %s (%s)", args.init_from, tf_config.to_dict())

    # --- environments
    venv = make_surrogate_env(args) if args.backend == "surrogate" else make_training_env(args)
    if tf_config.joint:
        from agents.vec import JointActions

        venv = JointActions(venv)

    # --- PPO
    base_lr = args.lr
    lr_schedule = (lambda remaining: base_lr * remaining) if args.anneal_lr else base_lr
    model = PPO(
        "MlpPolicy",
        venv,
        learning_rate=lr_schedule,
        n_steps=args.n_steps,
        batch_size=args.batch,
        n_epochs=args.n_epochs,
        gamma=args.gamma,
        gae_lambda=args.gae_lambda,
        clip_range=args.clip_range,
        ent_coef=args.ent_coef,
        vf_coef=args.vf_coef,
        max_grad_norm=args.max_grad_norm,
        policy_kwargs=policy_kwargs(args.extractor, tf_config, mlp_width=args.mlp_width),
        tensorboard_log=str(out / "tb"),
        seed=args.seed,
        device="cpu",
        verbose=0,
    )
    reinit_extractor(model.policy)
    if init_model is not None:
        from agents.export import load_into_policy

        load_into_policy(model.policy, init_model)
    elif args.prior_setting:
        prior = DEFAULT_GRID.action(CompressionSetting.parse(args.prior_setting))
        prefer_setting(model.policy, list(prior), args.prior_logit)
        log.info("action heads prefer %s (+%s logits)", args.prior_setting, args.prior_logit)
    anchor = None
    if args.bc_episodes:
        if args.backend != "surrogate":
            raise ValueError("--bc-episodes labels episodes on the surrogate; use the surrogate backend")
        from agents.imitation import CloneAnchor, clone, oracle_dataset  # loaded when used

        t_bc = time.perf_counter()
        names = list(args.workloads) or list(workloads_of("train", gpu=True))
        obs, acts = oracle_dataset(
            names,
            hardware_draws(args),
            args.depth,
            args.bc_episodes,
            seed=args.seed * 100_003,
            explore=args.bc_explore,
        )
        losses = clone(model.policy, obs, acts, epochs=args.bc_epochs, lr=args.bc_lr or args.lr)
        log.info(
            "behaviour cloning: %d intervals of %d episodes, cross-entropy %.3f -> %.3f (%.0f s)",
            len(obs),
            args.bc_episodes,
            losses[0],
            losses[-1],
            time.perf_counter() - t_bc,
        )
        if args.bc_anchor:
            anchor = CloneAnchor(obs, acts, args.bc_anchor)
    n_params = count_parameters(model.policy)
    n_fx = count_parameters(model.policy.features_extractor)
    log.info("policy: %s extractor, %d parameters (%d in the extractor)", args.extractor, n_params, n_fx)

    # --- training with periodic validation
    callback = HeldoutEvalCallback(
        every=args.eval_every,
        episodes=args.eval_episodes,
        seed=args.eval_seed,
        out_dir=out,
        hardware=hardware_draws(args),
        score=args.selection_score,
        depth=args.depth,
    )
    callbacks: list[Any] = [callback]
    if anchor is not None:
        callbacks.append(anchor)
    if args.max_minutes > 0:
        callbacks.append(WallClockLimit(t0 + 60.0 * args.max_minutes))
    run_name = f"{args.extractor}-s{args.seed}"
    model.learn(
        total_timesteps=args.total_timesteps,
        callback=callbacks,
        tb_log_name=run_name,
        progress_bar=args.progress_bar,
    )
    model.save(out / "final_model.zip")
    train_wall_s = time.perf_counter() - t0

    # --- export the best checkpoint
    best_metrics = {
        # the key is kept for existing readers; since issue 13 these are the validation split's metrics
        "heldout_surrogate": callback.best_metrics,
        "score_advantage_per_weight": callback.best_score,
        "floor_failures": callback.best_floor_failures,
        "best_at_timesteps": callback.best_timesteps,
        "timesteps": int(model.num_timesteps),
        "stopped_by_max_minutes": bool(args.max_minutes > 0 and model.num_timesteps < args.total_timesteps),
        "train_wall_s": round(train_wall_s, 1),
        "parameters": n_params,
        "surrogate": surrogate_id(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}",
    }
    manifest = None
    export_dir = args.export_dir or str(out / "policy")
    if args.extractor == "tinyformer" and export_dir.lower() != "none":
        from agents.export import export_policy

        best = callback.best_tinyformer()
        version = args.version or f"{args.extractor}-s{args.seed}-{args.total_timesteps}"
        manifest = export_policy(
            best,
            export_dir,
            name=args.name,
            version=version,
            training_command=command,
            training_config=config,
            metrics=best_metrics,
        )
        log.info("exported %s", manifest)
    summary = {
        "command": command,
        "config": config,
        "metrics": best_metrics,
        "manifest": str(manifest) if manifest else None,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    venv.close()
    return TrainResult(
        out_dir=out,
        manifest=manifest,
        best_score=callback.best_score,
        best_metrics=best_metrics,
        wall_s=time.perf_counter() - t0,
        timesteps=int(model.num_timesteps),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``mango train [options]`` (``--help`` lists them)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = tyro.cli(TrainArgs, args=argv, prog="mango train", description=(TrainArgs.__doc__ or "").strip())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = train(args, command=shlex.join(["mango", "train", *argv]))
    print(
        f"trained {result.timesteps} steps in {result.wall_s:.0f} s; best validation score (advantage over "
        f"the best static per unit weight) {result.best_score:+.4f}"
    )
    for preset, m in sorted(result.best_metrics["heldout_surrogate"].items()):
        print(
            f"  {preset:<13} policy {m['policy_return']:9.4f}  best static {m['static_return']:9.4f} "
            f"({m['static_setting']})  improvement {m['improvement']:+.3f}"
        )
    if result.manifest:
        print(f"artifact: {result.manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
