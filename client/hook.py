"""AdaptiveCompression: the one line a training loop adds to let MANGO choose compression settings.

::

    opt = MangoAdamW(model.parameters(), lr=3e-4)
    with AdaptiveCompression(opt, server_url="http://127.0.0.1:8000", api_key=key,
                             objective=Objective(w_loss=1.0, w_memory=0.5), planned_steps=10_000) as hook:
        for batch in loader:
            loss = model(batch)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            hook.step(loss)          # the one line

Per step, :meth:`AdaptiveCompression.step` only appends the detached loss tensor to a list (and, every
``grad_norm_every`` steps, the gradients' norm the optimizer's step computed): no host sync, no I/O.
Every ``interval_steps`` steps it closes a control interval:

1. one device sync turns the interval's losses and gradient norms into floats;
2. it builds a :class:`~client.protocol.TelemetryRecord` (loss mean/std, gradient norm, the optimizer's
   ``compression_stats()``, ``state_bytes()``, peak memory, energy from the meter, wall time, lr, the
   setting in force, progress, skipped steps) and appends it to :attr:`history` (the newest ``MAX_HISTORY``);
3. it hands the window to the :class:`~client.policy_client.PolicyClient`, whose background thread asks the
   service; the answer is applied at the first step after it arrives (a lock-free check per step), not a
   whole interval later. Without ``server_url`` the local controller decides at once, and its setting
   applies at once: by default the **shipped learned policy, in-process** (the same artifact and numpy
   runtime the service answers ``default`` with, :func:`client.policy.load_default_policy`), so a job gets
   learned control with no service at all; ``controller="accordion"`` (or any heuristic name) selects a
   heuristic, ``controller="hold"`` keeps the optimizer's setting.

Before the first interval the hook makes the first decision itself (``first_decision``, on by default with
a service or the learned policy): :func:`~client.controllers.first_setting_for_profile` from the objective
and the job's cost ``profile``, so the first interval no longer always runs uncompressed (the policy was
trained on episodes that start this way).

Under ``torch.distributed`` (a process group of more than one rank when the hook is built: DDP, FSDP2, or a
comm hook) every rank holds the job's one setting: DDP replicas must step the same update and FSDP2 shards
gather one basis. Every rank builds its own AdaptiveCompression with the same ``interval_steps``; rank 0
decides (the first decision and every interval's; only its hook talks to the service, whichever ranks are
given the ``server_url``), and its setting is broadcast at construction and at each interval boundary, where
decisions then take effect.

The hook never waits on the network: when the service is slow or down, the PolicyClient's fallback
controller answers and the decision log says ``source="fallback"``.

Decision log (``decision_log=path``): JSON lines, one per decision, with ``step`` (boundary where it was
applied), ``request_step`` (newest step of the window it answers), ``setting``, ``source``
(``service | fallback | local``), ``shielded``, ``reason``, ``latency_ms``, ``policy``, ``changed``
(the optimizer switched to it), ``shadow`` (shadow mode: never applied).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Literal

import torch
from pydantic import ValidationError

from client.compression.comm_hook import broadcast_setting
from client.compression.interface import CompressedOptimizer, CompressionStats, SettingTarget
from client.controllers import HEURISTICS, StaticController, first_setting_for_profile, make_controller
from client.policy import Controller, LearnedPolicy, load_default_policy, load_policy
from client.policy_client import PolicyClient
from client.profile import job_profile
from client.protocol import (
    MAX_HISTORY,
    CompressionSetting,
    CostProfile,
    Decision,
    Objective,
    Reference,
    TelemetryRecord,
)
from client.telemetry import (
    EnergyMeter,
    EnergyReading,
    IntervalStats,
    MemoryTracker,
    ModelledMeter,
    TelemetryError,
    global_grad_norm,
    make_energy_meter,
)

__all__ = ["AdaptiveCompression", "DecisionEntry", "resolve_controller", "unwrap_optimizer"]

logger = logging.getLogger(__name__)

#: Loss recorded for an interval whose every loss was NaN/inf (the contract wants finite floats; a huge
#: loss is what a divergence looks like to the policy and the shield).
DIVERGED_LOSS = 1e30
_STATE_VERSION = 1  # AdaptiveCompression.state_dict() layout
#: The members of :class:`~client.compression.interface.CompressedOptimizer`, named in the error message.
_MEMBERS = (
    "param_groups",
    "setting",
    "apply_setting",
    "state_bytes",
    "dense_state_bytes",
    "compression_stats",
)


@dataclass(frozen=True)
class DecisionEntry:
    """One decision as the hook handled it (also one line of the decision log)."""

    step: int
    request_step: int
    setting: dict[str, float]
    source: Literal["service", "fallback", "local"]
    shielded: bool
    reason: str
    latency_ms: float
    policy: str
    policy_version: str
    changed: bool
    """whether the optimizer switched to ``setting`` (False: same setting, refused, or shadow mode)"""


def unwrap_optimizer(optimizer: Any) -> Any:
    """The optimizer inside framework wrappers: accelerate's ``AcceleratedOptimizer`` (``.optimizer``),
    Lightning's ``LightningOptimizer`` (``._optimizer``), nested; the object itself when it is a
    :class:`~client.compression.interface.CompressedOptimizer` or wraps nothing. Imports none of those
    libraries."""
    seen = 0
    while not isinstance(optimizer, CompressedOptimizer) and seen < 8:
        inner = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
        if inner is None or inner is optimizer:
            break
        optimizer, seen = inner, seen + 1
    return optimizer


#: ``controller=`` names beside the heuristics: the shipped learned policy, an artifact, the setting in force.
LEARNED, HOLD = "learned", "hold"


def resolve_controller(spec: Controller | str | None, *, server: bool) -> Controller | None:
    """The hook's local controller for ``controller=spec``; ``None`` means: hold the setting in force.

    ``None`` is the shipped learned policy without a server (:func:`client.policy.load_default_policy`) and
    holding with one (the service's failures then keep the last good setting). A string names a heuristic
    of :data:`client.controllers.HEURISTICS`, ``"learned"`` (the shipped policy), ``"learned:<path>"`` (an
    artifact: manifest, weights file or directory) or ``"hold"``.

    :raises ValueError: an unknown name (the message lists the known ones).
    :raises client.policy.ArtifactError: an artifact that does not verify.
    """
    if spec is None:
        return None if server else load_default_policy()
    if not isinstance(spec, str):
        return spec
    if spec == HOLD:
        return None
    if spec == LEARNED:
        return load_default_policy()
    if spec.startswith(LEARNED + ":"):
        return load_policy(spec.split(":", 1)[1])
    if spec in HEURISTICS:
        return make_controller(spec)
    raise ValueError(
        f"unknown controller {spec!r}; use a heuristic {sorted(HEURISTICS)}, {LEARNED!r} (the shipped "
        f"learned policy), '{LEARNED}:<artifact path>' or {HOLD!r} (keep the setting in force)"
    )


def _encode(value: Any) -> Any:
    """A controller attribute as plain Python (settings as tagged dicts), for ``weights_only`` loading."""
    if isinstance(value, CompressionSetting):
        return {"__setting__": value.model_dump(mode="json")}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "__setting__" in value:
        return CompressionSetting.model_validate(value["__setting__"])
    return value


_PLAIN = (type(None), bool, int, float, str)


def _controller_state(controller: Controller) -> dict[str, Any]:
    """The controller's per-job state: its ``state_dict()`` if it has one, else its private attributes
    (the heuristics keep their level, cooldown and last answer there) and ``reason``."""
    own = getattr(controller, "state_dict", None)
    if callable(own):
        return {"state_dict": own()}
    attrs: dict[str, Any] = {}
    for name, value in vars(controller).items():
        if not (name.startswith("_") or name == "reason"):
            continue  # public attributes are the constructor's knobs: the resumed job passes them again
        if isinstance(value, (*_PLAIN, CompressionSetting)):
            attrs[name] = _encode(value)
        else:
            logger.debug("controller %s: attribute %s (%s) not checkpointed", controller.name, name, value)
    return {"name": controller.name, "attrs": attrs}


def _load_controller_state(controller: Controller, state: dict[str, Any]) -> None:
    if "state_dict" in state:
        controller.load_state_dict(state["state_dict"])  # type: ignore[attr-defined]
        return
    if state["name"] != controller.name:
        logger.warning(
            "load_state_dict: the checkpoint's controller was %s, this hook's is %s: state not restored",
            state["name"],
            controller.name,
        )
        return
    for name, value in state["attrs"].items():
        setattr(controller, name, _decode(value))


def _finite(x: Any, default: float = 0.0, lo: float = 0.0, hi: float = DIVERGED_LOSS) -> float:
    """``x`` as a float in ``[lo, hi]``: NaN/missing -> ``default``, +-inf -> the bound."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return default
    if math.isnan(v):
        return default
    return min(max(v, lo), hi)


class AdaptiveCompression:
    """Telemetry + decisions for a :class:`~client.compression.MangoAdamW` (see the module docstring).

    :param optimizer: a MangoAdamW (any :class:`~client.compression.interface.CompressedOptimizer`), also
        inside accelerate's or Lightning's optimizer wrapper (see :func:`unwrap_optimizer`).
    :param server_url: policy service root; ``None`` runs the local ``controller`` only (by default the
        shipped learned policy, in-process).
    :param api_key: the service's API key (default: env ``MANGO_API_KEY``); required with ``server_url``.
    :param objective: the job's trade-off; default ``Objective()`` (loss only).
    :param interval_steps: optimizer steps per control interval, >= 1. Longer: fewer, better-averaged
        decisions, and energy windows well above NVML's ~100 ms counter period; 50 is a good default.
    :param planned_steps: total steps of the run, for the ``progress`` feature (``None``: unknown).
    :param controller: the local controller: the decider without a server, or the fallback when the service
        fails. A :class:`~client.policy.Controller` instance, a heuristic's name (``HEURISTICS``),
        ``"learned"`` (the shipped learned policy), ``"learned:<path>"`` (an artifact) or ``"hold"``.
        Default: the shipped learned policy without a server; hold the setting in force (the last good one)
        with a server. See :func:`resolve_controller`.
    :param energy_meter: default ``make_energy_meter("auto", device_index)`` (NVML, Zeus, else modelled).
    :param decision_log: path of a JSON-lines decision log (appended to), or ``None``.
    :param job_id: the job's id at the service; default ``job-<random>``.
    :param policy: the service policy to ask.
    :param grad_norm_every: sample the global gradient norm every this many steps (no sync: the norm the
        optimizer's step computed, :meth:`MangoAdamW.last_grad_norm`, else one fused kernel over the
        gradients); default ``max(1, interval_steps // 8)``; ``0`` uses only the last step's norm of the
        interval.
    :param flops_per_step: FLOPs of one training step, for the modelled meter (``~6 x params x tokens``).
    :param client_options: extra keyword arguments of :class:`PolicyClient` (timeouts, retries, breaker).
    :param apply_decisions: ``False`` is shadow mode: decisions are asked for and logged (``"shadow": true``)
        but never applied, to evaluate a policy on a live job without letting it act.
    :param comm_state: DDP mode: the :class:`~client.compression.comm_hook.MangoHookState` registered with
        ``DistributedDataParallel.register_comm_hook``. Decisions then set the *communication* compression
        (the optimizer keeps its own setting); records carry ``comm_bytes`` / ``comm_time_s`` and the hook's
        buffers count in ``state_bytes``. As in any ``torch.distributed`` job (module docstring), rank 0
        decides and its setting is broadcast, so ranks never diverge.
    :param profile: the job's hardware :class:`~client.protocol.CostProfile` (:mod:`client.profile`,
        ``mango profile``): sent to the service with every window and used for the first decision.
        ``"auto"`` (default): with a service or the learned policy (outside DDP mode), the hook takes the
        cached profile of this device and parameter shapes, measuring it on a miss before the first step
        (:func:`client.profile.job_profile`; on a GPU it also compiles every kernel the policy can switch
        to, which the run would otherwise pay mid-training), because the policy was trained on jobs that
        send one; with a heuristic, none. ``None``: no profile (the policy then sees ``has_profile = 0``).
        Under ``torch.distributed`` only rank 0 profiles (it alone decides). Without a measured
        training step (``job_profile(..., train_step=...)``) a profile gets one from the first interval's
        time per step, so the policy sees the optimizer's share of a step from then on.
    :param first_decision: choose the first interval's setting from the objective and ``profile`` before
        any telemetry (:func:`~client.controllers.first_setting_for_profile`). Default: on with a
        ``server_url`` or a learned local policy, outside DDP mode; off otherwise (a heuristic keeps the
        optimizer's setting until its first decision).
    :param sync_ranks: every rank holds rank 0's setting (module docstring). Default: when
        ``torch.distributed`` has more than one rank at construction. ``False`` lets each rank decide for
        itself, for ranks that train separate models (a replica of one model must not).
    """

    def __init__(
        self,
        optimizer: Any,
        *,
        server_url: str | None = None,
        api_key: str | None = None,
        objective: Objective | None = None,
        interval_steps: int = 50,
        planned_steps: int | None = None,
        controller: Controller | str | None = None,
        energy_meter: EnergyMeter | None = None,
        decision_log: str | os.PathLike[str] | None = None,
        job_id: str | None = None,
        policy: str = "default",
        grad_norm_every: int | None = None,
        flops_per_step: float = 0.0,
        client_options: dict[str, Any] | None = None,
        apply_decisions: bool = True,
        comm_state: Any = None,
        profile: CostProfile | Literal["auto"] | None = "auto",
        first_decision: bool | None = None,
        sync_ranks: bool | None = None,
    ) -> None:
        optimizer = unwrap_optimizer(optimizer)
        if not isinstance(optimizer, CompressedOptimizer):
            missing = [name for name in _MEMBERS if not hasattr(optimizer, name)]
            raise TypeError(
                f"optimizer {type(optimizer).__name__} lacks {missing}: AdaptiveCompression drives a "
                "client.compression.MangoAdamW; build it in place of torch.optim.AdamW, e.g. "
                "MangoAdamW(model.parameters(), lr=3e-4) (wrappers such as accelerate's AcceleratedOptimizer "
                "and Lightning's LightningOptimizer around it are unwrapped)"
            )
        if interval_steps < 1:
            raise ValueError(f"interval_steps={interval_steps} must be >= 1 (50 is a good default)")
        if planned_steps is not None and planned_steps < 1:
            raise ValueError(f"planned_steps={planned_steps} must be >= 1 or None")
        if grad_norm_every is not None and grad_norm_every < 0:
            raise ValueError(f"grad_norm_every={grad_norm_every} must be >= 0")
        self.optimizer: CompressedOptimizer = optimizer
        self.comm_state = comm_state
        # the object whose setting the decisions control: the DDP hook's state in DDP mode
        self._target: SettingTarget = comm_state if comm_state is not None else optimizer
        self.apply_decisions = bool(apply_decisions)
        self.objective = objective or Objective.model_validate({})
        self.interval_steps = int(interval_steps)
        self.planned_steps = planned_steps
        self.job_id = job_id or f"job-{uuid.uuid4().hex[:12]}"
        self.grad_norm_every = max(1, interval_steps // 8) if grad_norm_every is None else grad_norm_every
        key = api_key or os.environ.get("MANGO_API_KEY")
        if server_url is not None and not key:
            raise ValueError("server_url is set but no api_key: pass api_key= or set MANGO_API_KEY")
        local = resolve_controller(controller, server=server_url is not None)
        self._hold = local is None  # hold the setting in force (when the service fails, or always)
        self.controller: Controller = local or StaticController(self._target.setting)
        learned = server_url is not None or isinstance(self.controller, LearnedPolicy)
        # under torch.distributed every rank must hold one setting (DDP replicas step the same update, FSDP2
        # shards gather one basis): rank 0 decides and broadcasts, the first decision included
        dist_on = torch.distributed.is_available() and torch.distributed.is_initialized()
        if sync_ranks and not dist_on:
            raise ValueError("sync_ranks=True needs torch.distributed initialized before the hook is built")
        dist_on = dist_on and sync_ranks is not False
        self._world = torch.distributed.get_world_size() if dist_on else 1
        self._rank = torch.distributed.get_rank() if dist_on else 0

        self._params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
        if not self._params:
            raise ValueError("optimizer has no trainable parameters")
        if isinstance(profile, str):
            if profile != "auto":
                raise ValueError(f"profile={profile!r}: pass a CostProfile, 'auto' or None")
            profile = self._auto_profile() if learned and comm_state is None and self._rank == 0 else None
        self.profile: CostProfile | None = profile
        self._profile_checked = False  # see _complete_profile
        # see _calibrate_profile: the profile's own training step, and the least time per step seen since
        self._profile_train_s = profile.train_step_s if isinstance(profile, CostProfile) else None
        self._observed_step_s = float("inf")
        self._n_params = sum(p.numel() for p in self._params)
        device = self._params[0].device
        self._meter = energy_meter or make_energy_meter(
            "auto", device.index or 0, flops_per_step=flops_per_step, bytes_per_step=self._bytes_per_step()
        )
        self._memory = MemoryTracker(device)
        self._stats = IntervalStats()

        self._client: PolicyClient | None = None
        if server_url is not None and self._rank != 0:
            logger.info("rank %d follows rank 0's decisions: it sends nothing to %s", self._rank, server_url)
        elif server_url is not None:
            assert key is not None
            self._client = PolicyClient(
                server_url,
                key,
                self.job_id,
                self.objective,
                policy,
                fallback=None if self._hold else self.controller,
                profile=profile,
                **(client_options or {}),
            )
        self._log: IO[str] | None = None
        if decision_log is not None:
            Path(decision_log).parent.mkdir(parents=True, exist_ok=True)
            self._log = open(decision_log, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

        self._history: deque[TelemetryRecord] = deque(maxlen=MAX_HISTORY)
        self.reference: Reference | None = None
        self.decisions: list[DecisionEntry] = []
        self._counts = {
            "intervals": 0,
            "decisions": 0,
            "fallbacks": 0,
            "service_decisions": 0,
            "local_decisions": 0,
            "setting_changes": 0,
            "apply_errors": 0,
            "telemetry_errors": 0,
        }
        self._step = 0
        self._in_interval = 0
        self._skipped_total = 0
        self.overhead_s = 0.0  # wall time spent inside the hook (per-step work and interval boundaries)
        self.apply_s = 0.0  # the part of overhead_s spent converting state in optimizer.apply_setting
        self._closed = False
        logger.info(
            "AdaptiveCompression job=%s interval_steps=%d server=%s controller=%s meter=%s memory=%s",
            self.job_id,
            self.interval_steps,
            server_url or "none (local)",
            self.controller.name,
            self._meter.describe(),
            self._memory.source,
        )
        if learned and profile is None and comm_state is None and self._rank == 0:
            logger.warning(
                "no cost profile: the learned policy was trained on jobs that send one (it reads what a "
                "setting costs on this hardware from it) and will see 'no profile' instead; leave profile="
                "'auto' or pass client.profile.job_profile(model.parameters(), train_step=...)"
            )
        if first_decision is None:
            first_decision = learned and comm_state is None
        if self._distributed():  # one broadcast here on every rank, whatever its arguments
            if self._rank == 0:
                if first_decision:
                    self._first_decision()
                broadcast_setting(self._target.setting, src=0)
            else:
                self._set(broadcast_setting(None, src=0))
        elif first_decision:
            self._first_decision()
        self._begin_interval()

    def _auto_profile(self) -> CostProfile | None:
        """``profile="auto"``: the cached profile of this device and shapes, measured on a miss; ``None``
        (with a warning) when profiling fails, e.g. out of memory: a profile is advice, the job goes on."""
        t0 = time.perf_counter()
        try:
            prof = job_profile(self._params)
        except Exception as exc:
            logger.warning("could not profile this job's optimizer, running without a cost profile: %r", exc)
            return None
        logger.info(
            "cost profile of %s, %d parameters, in %.1f s (cached per device, shapes and core)",
            prof.device,
            prof.n_params,
            time.perf_counter() - t0,
        )
        return prof

    def _first_decision(self) -> None:
        try:
            dense: int | None = int(self.optimizer.dense_state_bytes())
        except Exception:
            dense = None
        t0 = time.perf_counter()
        setting, reason = first_setting_for_profile(self.objective, self.profile, dense)
        decision = Decision(setting=setting, policy="first:prior", policy_version="local", reason=reason)
        self._apply(decision, "local", 0, (time.perf_counter() - t0) * 1e3)

    # ------------------------------------------------------------------ public surface

    @property
    def history(self) -> list[TelemetryRecord]:
        """The newest ``MAX_HISTORY`` telemetry records, oldest first."""
        return list(self._history)

    @property
    def counters(self) -> dict[str, int]:
        """Hook counts (intervals, decisions, fallbacks, ...) and the PolicyClient's as ``client_*``."""
        out = dict(self._counts)
        if self._client is not None:
            out.update({f"client_{k}": v for k, v in self._client.counters.items()})
        return out

    @property
    def policy_client(self) -> PolicyClient | None:
        return self._client

    @property
    def service_status(self) -> str:
        """``local`` (no service), else the client's ``ok``, ``unreachable`` or ``auth_error`` (wrong key)."""
        return "local" if self._client is None else self._client.status

    @property
    def energy_meter(self) -> EnergyMeter:
        return self._meter

    @property
    def telemetry_s(self) -> float:
        """Wall time the hook spent on telemetry and decisions, excluding state conversion (``apply_s``)."""
        return self.overhead_s - self.apply_s

    @property
    def steps(self) -> int:
        """Steps seen by :meth:`step`."""
        return self._step

    def step(self, loss: torch.Tensor | float) -> None:
        """Record one optimizer step; call it right after ``optimizer.step()``.

        :param loss: the step's loss, a scalar tensor (kept on its device: no sync) or a float.
        """
        t0 = time.perf_counter()
        if self._closed:
            raise RuntimeError("AdaptiveCompression is closed")
        self._step += 1
        self._in_interval += 1
        self._stats.add_loss(loss)
        self._meter.poll()
        client = self._client
        if client is not None and self._world == 1 and client.has_outcome:
            outcome = client.poll()  # an answer arrived: apply it from the next step on
            if outcome is not None:
                self._apply(outcome.decision, outcome.source, outcome.step, outcome.latency_ms)
        if self.grad_norm_every and self._in_interval % self.grad_norm_every == 0:
            norm = self.optimizer.last_grad_norm()
            if norm is None:  # a sharded step's norms are this rank's: one fused kernel over the gradients
                norm = global_grad_norm(self._params)
            if norm is not None:
                self._stats.add_grad_norm(norm)
        if self._in_interval >= self.interval_steps:
            self._end_interval()
        self.overhead_s += time.perf_counter() - t0

    def close(self) -> None:
        """Stop the policy client, close the decision log and the meter. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._client is not None:
            self._client.close()
        if self._log is not None:
            self._log.close()
        self._meter.close()
        status = self.service_status
        logger.log(
            logging.ERROR if status == "auth_error" else logging.INFO,
            "AdaptiveCompression job=%s closed: service %s, %s",
            self.job_id,
            status if status != "auth_error" else "auth_error (the service refused the API key)",
            self.counters,
        )

    def __enter__(self) -> AdaptiveCompression:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ checkpointing

    def state_dict(self) -> dict[str, Any]:
        """What a resumed job needs so that the policy keeps seeing the same job.

        Save it beside the optimizer's state dict and restore both (the optimizer first) with
        :meth:`load_state_dict`::

            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "mango": hook.state_dict()}, f)
            ...
            ckpt = torch.load(f, weights_only=True)
            model.load_state_dict(ckpt["model"]); opt.load_state_dict(ckpt["opt"])
            hook = AdaptiveCompression(opt, ...same arguments...); hook.load_state_dict(ckpt["mango"])

        Holds the job id, the step count, the unfinished interval's losses and gradient norms (a checkpoint
        may be taken mid-interval: one device sync), the telemetry window, the reference, the setting in
        force, the local controller's state (cooldowns, ladder level), the counters and the decisions. Only
        plain Python values (``torch.load(weights_only=True)`` reads them).

        Not held: the wall-clock and energy baseline of the unfinished interval (it restarts at the load, so
        the first record after a resume times only the steps after it) and an answer of the policy service
        still in flight at the save (the service answers the next window instead).
        """
        return {
            "version": _STATE_VERSION,
            "job_id": self.job_id,
            "step": self._step,
            "interval": self._stats.state_dict(),
            "history": [rec.model_dump(mode="json") for rec in self._history],
            "reference": None if self.reference is None else self.reference.model_dump(mode="json"),
            "setting": self._target.setting.model_dump(mode="json"),
            "controller": _controller_state(self.controller),
            # without a controller the hook holds a setting: the one in force when it was built
            "hold": self.controller.setting.model_dump(mode="json")
            if self._hold and isinstance(self.controller, StaticController)
            else None,
            "counters": dict(self._counts),
            "skipped_total": self._skipped_total,
            "decisions": [asdict(d) for d in self.decisions],
            "overhead_s": self.overhead_s,
            "apply_s": self.apply_s,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output into a hook built with the same arguments.

        The saved job id replaces the constructor's (the service keeps metering one job). When the controlled
        object's setting differs from the saved one (its state was not restored), the saved setting is
        applied, with a warning.
        """
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            got = state.get("version") if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"not an AdaptiveCompression state dict of version {_STATE_VERSION} (got {got!r}); "
                "it must come from AdaptiveCompression.state_dict()"
            )
        if self._closed:
            raise RuntimeError("AdaptiveCompression is closed")
        if state["job_id"] != self.job_id:
            logger.info("load_state_dict: job id %s continues as %s", self.job_id, state["job_id"])
            self.job_id = str(state["job_id"])
            if self._client is not None:
                self._client.job_id = self.job_id
        self._step = int(state["step"])
        self._history.clear()
        self._history.extend(TelemetryRecord.model_validate(r) for r in state["history"])
        ref = state["reference"]
        self.reference = None if ref is None else Reference.model_validate(ref)
        saved = CompressionSetting.model_validate(state["setting"])
        if saved != self._target.setting:
            logger.warning(
                "load_state_dict: the %s holds %s, the checkpoint %s: applying the checkpoint's "
                "(restore the optimizer's state dict first to resume exactly)",
                type(self._target).__name__,
                self._target.setting.label(),
                saved.label(),
            )
            self._target.apply_setting(saved)
        _load_controller_state(self.controller, state["controller"])
        if self._hold and isinstance(self.controller, StaticController) and state["hold"] is not None:
            self.controller.setting = CompressionSetting.model_validate(state["hold"])
        self._counts.update({k: int(v) for k, v in state["counters"].items()})
        self._skipped_total = int(state["skipped_total"])
        self.decisions = [DecisionEntry(**d) for d in state["decisions"]]
        self.overhead_s = float(state["overhead_s"])
        self.apply_s = float(state["apply_s"])
        self._begin_interval()
        self._stats.load_state_dict(state["interval"])
        self._in_interval = self._stats.steps

    # ------------------------------------------------------------------ interval boundary

    def _bytes_per_step(self) -> float:
        # parameters read + written and gradients read (fp32), optimizer state read + written
        try:
            state = int(self.optimizer.state_bytes())
        except Exception:
            state = 8 * sum(p.numel() for g in self.optimizer.param_groups for p in g["params"])
        n = sum(p.numel() for g in self.optimizer.param_groups for p in g["params"])
        return 12.0 * n + 2.0 * state

    def _begin_interval(self) -> None:
        self._stats.reset()
        self._in_interval = 0
        self._memory.reset()
        try:
            self._meter.begin()
        except TelemetryError as exc:
            self._replace_meter(exc)
            self._meter.begin()
        self._t0 = time.perf_counter()

    def _replace_meter(self, exc: Exception) -> ModelledMeter:
        logger.warning(
            "energy meter %s failed (%s): switching to the modelled estimate", self._meter.describe(), exc
        )
        self._counts["telemetry_errors"] += 1
        self._meter.close()
        modelled = ModelledMeter(bytes_per_step=self._bytes_per_step())
        self._meter = modelled
        return modelled

    def _read_energy(self, steps: int) -> EnergyReading:
        try:
            return self._meter.end(steps=steps)
        except TelemetryError as exc:
            interval_s = time.perf_counter() - self._t0
            modelled = self._replace_meter(exc)
            e = modelled.model.energy_j(0.0, steps * self._bytes_per_step(), interval_s)
            return EnergyReading(e, e / interval_s if interval_s > 0 else 0.0, interval_s, "modelled")

    def _end_interval(self) -> None:
        steps = self._in_interval
        summary = self._stats.summary()  # the interval's one device sync
        energy = self._read_energy(steps)
        interval_s = time.perf_counter() - self._t0
        mem = self._memory.read()
        record = self._build_record(summary, energy, interval_s, mem.peak_bytes)
        self._counts["intervals"] += 1
        if record is not None:
            self._history.append(record)
            if self.reference is None:
                self.reference = self._build_reference(record)
            if not self._profile_checked:  # the first interval of this process (a resumed job's too)
                self._profile_checked = True
                self._complete_profile(record, steps)
            else:
                self._calibrate_profile(record, steps)
            self._decide_and_apply(record)
        if isinstance(self._meter, ModelledMeter):
            self._meter.bytes_per_step = self._bytes_per_step()
        self._begin_interval()

    def _build_record(
        self, summary: Any, energy: EnergyReading, interval_s: float, peak_bytes: int
    ) -> TelemetryRecord | None:
        opt = self.optimizer
        try:
            cstats = opt.compression_stats()
        except Exception as exc:
            logger.warning("compression_stats() failed: %s", exc)
            cstats = CompressionStats()
        if summary.nonfinite_losses:
            logger.warning(
                "step %d: %d of %d losses in the interval were not finite",
                self._step,
                summary.nonfinite_losses,
                summary.steps,
            )
        loss = summary.loss_mean
        if not math.isfinite(loss):
            loss = DIVERGED_LOSS
        grad_norm = summary.grad_norm_mean
        if not math.isfinite(grad_norm):
            grad_norm = cstats.grad_norm
        skipped_total = cstats.skipped_steps
        skipped = max(0, skipped_total - self._skipped_total)
        self._skipped_total = skipped_total
        lr = opt.param_groups[0]["lr"]
        state_bytes = int(opt.state_bytes())
        comm: dict[str, Any] = {}
        if self.comm_state is not None:
            comm = self.comm_state.telemetry()  # the last step's bytes handed to the collectives and time
            state_bytes += int(self.comm_state.state_bytes())
        progress = min(self._step / self.planned_steps, 1.0) if self.planned_steps else None
        try:
            return TelemetryRecord.model_validate(
                {
                    "step": self._step,
                    "loss": loss,
                    "loss_std": _finite(summary.loss_std),
                    "grad_norm": grad_norm,
                    "compression_error": cstats.compression_error,
                    "grad_kurtosis": cstats.grad_kurtosis,
                    "spectral_tail": cstats.spectral_tail,
                    "state_bytes": state_bytes,
                    "peak_memory_bytes": int(peak_bytes),
                    "energy_j": _finite(energy.energy_j),
                    "mean_power_w": _finite(energy.mean_power_w),
                    "energy_source": energy.source,
                    "energy_coarse": energy.coarse,
                    "interval_s": max(interval_s, 0.0),
                    "lr": _finite(float(lr)),
                    "setting": self._target.setting,
                    "progress": progress,
                    "skipped_steps": skipped,
                    **comm,
                }
            )
        except ValidationError as exc:  # a bug upstream must not stop training
            self._counts["telemetry_errors"] += 1
            logger.error("step %d: telemetry record rejected, interval not reported: %s", self._step, exc)
            return None

    #: How far the job's observed step may exceed the profile's measured training step before the profile
    #: takes the observed one (see :meth:`_calibrate_profile`).
    OBSERVED_STEP_SLACK = 1.25

    def _calibrate_profile(self, record: TelemetryRecord, steps: int) -> None:
        """Give the profile the job's own time per step where its measured training step is far too short.

        ``mango profile`` times forward, backward and AdamW in a tight loop; a job's step also holds its
        data loading, evaluation and logging, which no optimizer setting changes. Where they are large
        (small models on a CPU: the measured step can be a third of the real one) the profile overstates
        the optimizer's share of a step, and with it the time every slower setting costs the job, so a
        policy keeps settings that would pay. From the second interval on, each interval's time per step
        less its setting's extra optimizer cost estimates the uncompressed step; the least estimate so far
        (one-time work such as compilation only lengthens an interval) replaces the profile's training step
        once it exceeds it by :attr:`OBSERVED_STEP_SLACK`. The profile's own measurement stays the floor.
        """
        prof, measured = self.profile, self._profile_train_s
        if prof is None or measured is None or steps < 1 or not prof.settings:
            return
        estimate = prof.train_step_from_interval(record.setting, record.interval_s, steps)
        self._observed_step_s = min(self._observed_step_s, estimate)
        observed = self._observed_step_s
        if observed <= measured * self.OBSERVED_STEP_SLACK or observed == prof.train_step_s:
            return
        self.profile = prof.model_copy(update={"train_step_s": observed})
        if self._client is not None:
            self._client.profile = self.profile
        logger.info(
            "profile: the job's step (%.3g s) is %.1fx the profile's measured training step; optimizer share "
            "%.1f%% from the job's own steps",
            observed,
            observed / measured,
            100.0 * (self.profile.optimizer_share or 0.0),
        )

    def _complete_profile(self, first: TelemetryRecord, steps: int) -> None:
        """Give a profile without a measured training step one from the process's first interval.

        The policy reads the optimizer's share of a step from the profile (the environment always draws
        one), and interval-time ratios follow from it; a profile taken without ``train_step`` has none. The
        first interval's time per step, less what its setting's optimizer step costs over AdamW's by the
        profile, stands for the uncompressed training step (an overestimate where that interval held
        one-time work, so the share comes out low rather than high).
        """
        prof = self.profile
        if prof is None or prof.train_step_s is not None or steps < 1 or not prof.settings:
            return
        train_s = prof.train_step_from_interval(first.setting, first.interval_s, steps)
        if not train_s > prof.adamw_step_s:
            logger.warning(
                "the first interval (%.3g s per step) is faster than the profile's optimizer step: the "
                "profile stays without a training step (was it taken on this device?)",
                first.interval_s / steps,
            )
            return
        self.profile = prof.model_copy(update={"train_step_s": train_s})
        if self._client is not None:
            self._client.profile = self.profile
        logger.info(
            "profile without a training step: %.3g s per step from the first interval (share %.1f%%)",
            train_s,
            100.0 * (self.profile.optimizer_share or 0.0),
        )

    def _build_reference(self, first: TelemetryRecord) -> Reference:
        try:
            dense = int(self.optimizer.dense_state_bytes())
        except Exception:
            dense = 8 * self._n_params
        return Reference(
            initial_loss=max(abs(first.loss), 1e-6),
            dense_state_bytes=max(dense, 1),
            interval_energy_j=max(first.energy_j, 1e-6),
            interval_s=max(first.interval_s, 1e-6),
        )

    def _distributed(self) -> bool:
        """Several ranks hold the job's setting (the process group at construction): rank 0 decides."""
        return self._world > 1

    def _decide_and_apply(self, record: TelemetryRecord) -> None:
        if self._distributed():
            if torch.distributed.get_rank() != 0:  # follow rank 0: the same setting on every rank
                self._set(broadcast_setting(None, src=0))
                return
            decided = self._decide(record)
            setting = decided[0].setting if decided is not None else self._target.setting
            broadcast_setting(setting, src=0)
        else:
            decided = self._decide(record)
        if decided is not None:
            self._apply(*decided)

    def _decide(
        self, record: TelemetryRecord
    ) -> tuple[Decision, Literal["service", "fallback", "local"], int, float] | None:
        """This interval's decision (local controller, or the service's newest answer), if any."""
        history = list(self._history)
        if self._client is None:
            t0 = time.perf_counter()
            setting = self.controller.decide(
                history, self.objective, reference=self.reference, profile=self.profile
            )
            latency_ms = (time.perf_counter() - t0) * 1e3
            decision = Decision(
                setting=setting,
                policy=f"local:{self.controller.name}",
                policy_version=str(getattr(self.controller, "version", "local")),
                reason=self.controller.reason,
            )
            return decision, "local", record.step, latency_ms
        outcome = self._client.poll()
        try:
            self._client.submit(history, self.reference)
        except (ValueError, RuntimeError) as exc:
            logger.error("could not submit the window at step %d: %s", record.step, exc)
        if outcome is None:
            return None
        return outcome.decision, outcome.source, outcome.step, outcome.latency_ms

    def _set(self, setting: CompressionSetting) -> bool:
        """Apply ``setting`` to the controlled object; ``True`` if it changed. Never raises."""
        if not self.apply_decisions or setting == self._target.setting:
            return False
        t0 = time.perf_counter()
        try:
            self._target.apply_setting(setting)
            self._counts["setting_changes"] += 1
            return True
        except Exception as exc:  # a refused setting must not stop training
            self._counts["apply_errors"] += 1
            logger.error("apply_setting(%s) failed at step %d: %s", setting.label(), self._step, exc)
            return False
        finally:
            self.apply_s += time.perf_counter() - t0

    def _apply(
        self,
        decision: Decision,
        source: Literal["service", "fallback", "local"],
        request_step: int,
        latency_ms: float,
    ) -> None:
        setting: CompressionSetting = decision.setting
        changed = self._set(setting)
        self._counts["decisions"] += 1
        key = {"service": "service_decisions", "fallback": "fallbacks", "local": "local_decisions"}[source]
        self._counts[key] += 1
        entry = DecisionEntry(
            step=self._step,
            request_step=request_step,
            setting=setting.model_dump(),
            source=source,
            shielded=decision.shielded,
            reason=decision.reason,
            latency_ms=round(latency_ms, 3),
            policy=decision.policy,
            policy_version=decision.policy_version,
            changed=changed,
        )
        self.decisions.append(entry)
        if self._log is not None:
            line = {"job_id": self.job_id, **asdict(entry), "shadow": not self.apply_decisions}
            self._log.write(json.dumps(line) + "\n")
        log = logger.info if changed else logger.debug
        log("step %d: %s decision %s (%s)", self._step, source, setting.label(), decision.reason)
