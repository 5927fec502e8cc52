"""AdaptiveCompression on a tiny MLP with the real MangoAdamW: records, reference, decision log, and training
that never waits on the network (server killed mid-run and restarted, server answering after 5 s)."""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch

import client.hook
import client.profile
from client.compression.optimizer import MangoAdamW
from client.controllers import AccordionController, StaticController, first_setting_for_profile
from client.hook import DIVERGED_LOSS, AdaptiveCompression
from client.policy import Controller, LearnedPolicy, ProfileFeatures, load_default_policy
from client.policy_client import DecisionOutcome
from client.profile import PROFILE_SETTINGS
from client.protocol import (
    MAX_HISTORY,
    CompressionSetting,
    CostProfile,
    Decision,
    Objective,
    Reference,
    TelemetryRecord,
)
from client.telemetry import ModelledMeter
from policy_service.launch import ServiceProcess, free_port
from tests.client.test_policy_client import STARTUP_TIMEOUT_S, TrickleServer

R8B8 = CompressionSetting(rank=8, bits=8, gamma=0.0)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Intra-op threads oversubscribe a shared CPU (a tiny step goes from ~10 ms to ~300 ms): use one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Task:
    """A few Linear layers on a fixed regression batch; ``train(hook, n)`` runs n steps."""

    def __init__(self, setting: CompressionSetting = R8B8, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(16, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 1),
        )
        self.opt = MangoAdamW(self.model.parameters(), lr=3e-3, setting=setting, min_compress_numel=512)
        self.x = torch.randn(32, 16)
        self.y = self.x[:, :1] - self.x[:, 1:2]
        self.losses: list[float] = []
        self.step_s: list[float] = []

    def train(self, hook: AdaptiveCompression, n: int) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            loss = (self.model(self.x) - self.y).pow(2).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            hook.step(loss)
            self.step_s.append(time.perf_counter() - t0)
            self.losses.append(float(loss.detach()))

    def train_until(self, hook: AdaptiveCompression, cond, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout_s
        while not cond():
            assert time.monotonic() < deadline, f"condition not met in {timeout_s} s: {hook.counters}"
            self.train(hook, 5)
            time.sleep(0.005)  # pace: a real step is milliseconds to seconds


def modelled() -> ModelledMeter:
    return ModelledMeter(flops_per_step=1e6)


def test_records_reference_and_log_in_local_mode(tmp_path: Path) -> None:
    task = Task()
    log = tmp_path / "decisions.jsonl"
    obj = Objective(w_loss=1.0, w_memory=1.0, memory_budget_bytes=None)
    with AdaptiveCompression(
        task.opt,
        objective=obj,
        interval_steps=5,
        planned_steps=40,
        controller="loraven",
        energy_meter=modelled(),
        decision_log=log,
    ) as hook:
        task.train(hook, 40)
    hist = hook.history
    assert len(hist) == MAX_HISTORY and [r.step for r in hist] == list(range(5, 45, 5))
    first, last = hist[0], hist[-1]
    assert last.loss == pytest.approx(statistics.fmean(task.losses[35:40]), rel=1e-6)
    assert last.loss_std == pytest.approx(statistics.pstdev(task.losses[35:40]), rel=1e-4, abs=1e-9)
    assert last.progress == 1.0 and first.progress == pytest.approx(5 / 40)
    assert last.lr == pytest.approx(3e-3) and last.energy_source == "modelled" and last.energy_j > 0
    assert last.state_bytes == task.opt.state_bytes() and last.peak_memory_bytes > 0
    assert all(r.grad_norm > 0 and 0 <= r.spectral_tail <= 1 for r in hist)
    assert any(r.compression_error > 0 for r in hist)
    ref = hook.reference
    assert ref is not None and ref.dense_state_bytes == task.opt.dense_state_bytes()
    assert ref.initial_loss == pytest.approx(statistics.fmean(task.losses[:5]), rel=1e-6)
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == 8 == hook.counters["decisions"] == hook.counters["local_decisions"]
    for line, entry in zip(lines, hook.decisions, strict=True):
        assert line["source"] == "local" and line["step"] == line["request_step"] == entry.step
        assert {"setting", "shielded", "reason", "latency_ms", "policy"} <= set(line)
        assert line["reason"].startswith("loraven")
    assert hook.telemetry_s > 0 and hook.overhead_s >= hook.telemetry_s


def test_the_hook_polls_its_meter_every_step() -> None:
    """The meter sees every training step (``EnergyMeter.poll``: NVML's counter moves dated inside the
    interval), each inside an open window."""

    class Counting(ModelledMeter):
        polls, open_polls, is_open = 0, 0, False

        def begin(self) -> None:
            super().begin()
            self.is_open = True

        def end(self, steps: int = 0):  # type: ignore[no-untyped-def]
            self.is_open = False
            return super().end(steps)

        def poll(self) -> None:
            self.polls += 1
            self.open_polls += self.is_open

    task, meter = Task(), Counting(flops_per_step=1e6)
    with AdaptiveCompression(task.opt, interval_steps=4, controller="static", energy_meter=meter) as hook:
        task.train(hook, 10)
    assert meter.polls == meter.open_polls == 10


def test_grad_norm_is_the_interval_mean_even_after_zero_grad() -> None:
    """The record's gradient norm is the mean over the interval's steps of the norm each step read (the
    optimizer's own, ``MangoAdamW.last_grad_norm``), also where the loop frees the gradients before
    ``hook.step`` as the module's example does."""
    task = Task()
    norms: list[float] = []
    with AdaptiveCompression(
        task.opt, interval_steps=4, controller="static", energy_meter=modelled()
    ) as hook:
        for _ in range(8):
            loss = (task.model(task.x) - task.y).pow(2).mean()
            loss.backward()
            task.opt.step()
            norms.append(
                float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in task.model.parameters()])))
            )
            task.opt.zero_grad(set_to_none=True)
            hook.step(loss)
    assert [r.grad_norm for r in hook.history] == pytest.approx(
        [statistics.fmean(norms[:4]), statistics.fmean(norms[4:])], rel=1e-5
    )


def _bare_profile(adamw_step_s: float, setting_step_s: float) -> CostProfile:
    """A profile taken without a training step (no optimizer share), R8B8 measured."""
    return CostProfile.model_validate(
        {
            "device": "cpu test",
            "signature": "0" * 16,
            "n_params": 5000,
            "adamw_step_s": adamw_step_s,
            "settings": {R8B8.label(): {"step_s": setting_step_s}},
        }
    )


def test_a_profile_without_a_training_step_gets_one_from_the_first_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The policy reads the optimizer's share of a step from the profile; a profile without a measured
    training step gets the first interval's time per step less the setting's extra optimizer cost."""
    task = Task()
    bare = _bare_profile(adamw_step_s=2e-5, setting_step_s=5e-5)
    with AdaptiveCompression(
        task.opt, interval_steps=4, controller="static", energy_meter=modelled(), profile=bare
    ) as hook:
        task.train(hook, 3)
        assert hook.profile is bare  # nothing before the first interval ends
        task.train(hook, 5)
    first = hook.history[0]
    assert hook.profile is not None and hook.profile.train_step_s is not None
    assert hook.profile.train_step_s == pytest.approx(first.interval_s / 4 - (5e-5 - 2e-5), rel=1e-9)
    assert hook.profile.optimizer_share == pytest.approx(2e-5 / hook.profile.train_step_s)
    assert hook.profile.settings == bare.settings  # the measured costs are kept
    # a profile whose AdamW step is slower than the job's whole step was not taken here: left alone, said so
    slow = _bare_profile(adamw_step_s=30.0, setting_step_s=31.0)
    task2 = Task()
    with (
        caplog.at_level(logging.WARNING, logger="client.hook"),
        AdaptiveCompression(
            task2.opt, interval_steps=4, controller="static", energy_meter=modelled(), profile=slow
        ) as hook2,
    ):
        task2.train(hook2, 4)
    assert len(hook2.history) == 1 and hook2.profile is slow
    assert "faster than the profile's optimizer step" in caplog.text
    # a learned policy with a profile: no "no cost profile" warning (the test above has the other case)
    with AdaptiveCompression(Task().opt, interval_steps=4, energy_meter=modelled(), profile=bare) as hook3:
        assert isinstance(hook3.controller, LearnedPolicy)
    assert "no cost profile" not in caplog.text


def test_a_profile_whose_training_step_is_far_too_short_takes_the_jobs_own_step() -> None:
    """A measured training step a fraction of the job's real one (data, evaluation and logging are not in
    it) would overstate the optimizer's share: from the second interval the profile takes the least
    observed time per step (less the setting's extra cost); a profile within the slack is left alone."""
    short = _bare_profile(adamw_step_s=2e-5, setting_step_s=5e-5).model_copy(update={"train_step_s": 1e-7})
    task = Task()
    with AdaptiveCompression(
        task.opt, interval_steps=4, controller="static", energy_meter=modelled(), profile=short
    ) as hook:
        task.train(hook, 4)
        assert hook.profile is short  # the first interval may hold one-time work: not used
        task.train(hook, 8)
    extra = hook.profile.cost(hook.history[1].setting).step_s - 2e-5
    least = min(r.interval_s / 4 - extra for r in hook.history[1:])
    assert hook.profile is not short and hook.profile.train_step_s == pytest.approx(least, rel=1e-9)
    assert hook.profile.settings == short.settings and hook.profile.adamw_step_s == short.adamw_step_s
    slow = short.model_copy(update={"train_step_s": 30.0})  # longer than any observed step: kept
    task2 = Task()
    with AdaptiveCompression(
        task2.opt, interval_steps=4, controller="static", energy_meter=modelled(), profile=slow
    ) as hook2:
        task2.train(hook2, 12)
    assert hook2.profile is slow


def test_auto_profile_measures_once_then_reads_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``profile="auto"`` (the default) with the learned policy: a miss measures this device and these
    shapes and caches the result; the next job with the same shapes reads it; a heuristic takes none; a
    profiling failure (here: out of memory) leaves the job running without one, said once."""
    monkeypatch.setenv("MANGO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(client.profile, "MIN_WINDOW_S", 0.005)  # the tiny model's steps are microseconds
    task = Task()
    with AdaptiveCompression(task.opt, interval_steps=4, energy_meter=modelled()) as hook:
        prof = hook.profile
        assert prof is not None and prof.source == "measured" and prof.n_params == 5313
        assert set(prof.settings) == set(PROFILE_SETTINGS) and prof.train_step_s is None
        chosen, _ = first_setting_for_profile(hook.objective, prof, int(task.opt.dense_state_bytes()))
        assert hook.decisions[0].setting == chosen.model_dump()  # the first decision read the profile
        task.train(hook, 4)  # (the first interval may give the profile a training step: tested above)
        assert hook.profile is not None and hook.profile.settings == prof.settings
    cached = list((tmp_path / "cache" / "profiles").glob("*.json"))
    assert len(cached) == 1 and CostProfile.model_validate_json(cached[0].read_text()) == prof
    with AdaptiveCompression(Task(seed=1).opt, interval_steps=4, energy_meter=modelled()) as hook2:
        assert hook2.profile == prof  # same shapes: the cache, not a second measurement
    with AdaptiveCompression(Task().opt, controller="accordion", energy_meter=modelled()) as hook3:
        assert hook3.profile is None

    def out_of_memory(params: object) -> CostProfile:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(client.hook, "job_profile", out_of_memory)
    with (
        caplog.at_level(logging.WARNING, logger="client.hook"),
        AdaptiveCompression(Task().opt, interval_steps=4, energy_meter=modelled()) as hook4,
    ):
        assert hook4.profile is None
    assert "could not profile" in caplog.text and "out of memory" in caplog.text
    assert caplog.text.count("no cost profile") == 1


def test_local_decision_applies_at_the_boundary_and_records_show_it() -> None:
    low, high = CompressionSetting(rank=16, bits=8, gamma=0.0), CompressionSetting(rank=2, bits=4, gamma=0.0)

    class Alternate(Controller):
        name = "alternate"

        def decide(
            self,
            history: Sequence[TelemetryRecord],
            objective: Objective,
            *,
            reference: Reference | None = None,
            profile: ProfileFeatures | None = None,
        ) -> CompressionSetting:
            self.reason = "alternate"
            return high if len(history) % 2 else low

    task = Task(setting=low)
    with AdaptiveCompression(
        task.opt, interval_steps=4, controller=Alternate(), energy_meter=modelled()
    ) as hook:
        task.train(hook, 16)
    settings = [r.setting for r in hook.history]
    assert settings == [low, high, low, high]  # each record carries the setting in force during it
    assert task.opt.setting == low
    assert hook.counters["setting_changes"] == 4


def test_without_a_server_the_shipped_learned_policy_decides_in_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The embedded default: no service, no controller -> the learned policy the service ships, run by the
    numpy runtime in this process; each decision is the policy's answer to the hook's own window. Without a
    cost profile (which every training episode had) the hook says so once."""
    task = Task(setting=CompressionSetting.off())
    objective = Objective(w_loss=1.0, w_memory=1.0)
    log = tmp_path / "decisions.jsonl"
    with (
        caplog.at_level(logging.WARNING, logger="client.hook"),
        AdaptiveCompression(
            task.opt,
            objective=objective,
            interval_steps=4,
            energy_meter=modelled(),
            decision_log=log,
            profile=None,
        ) as hook,
    ):
        assert caplog.text.count("no cost profile") == 1
        assert isinstance(hook.controller, LearnedPolicy) and hook.controller is load_default_policy()
        first = hook.decisions[0]  # the policy was trained on episodes that start with the first decision
        assert first.policy == "first:prior" and first.step == 0
        assert task.opt.setting == CompressionSetting.model_validate(first.setting)
        policy = load_default_policy()
        expected: list[CompressionSetting] = []
        for _ in range(6):
            task.train(hook, 4)
            expected.append(policy.decide(hook.history, objective, reference=hook.reference, profile=None))
    local = hook.decisions[1:]
    assert [CompressionSetting.model_validate(d.setting) for d in local] == expected
    assert all(d.source == "local" and d.policy == "local:tinyformer-ppo" for d in local)
    assert all(d.policy_version == policy.version for d in local)
    assert task.opt.setting == expected[-1] and hook.service_status == "local"
    assert all(math.isfinite(x) for x in task.losses) and task.losses[-1] < task.losses[0]
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert lines[-1]["policy"] == "local:tinyformer-ppo" and lines[-1]["reason"].startswith("learned policy")


def test_controller_selectors(tmp_path: Path) -> None:
    task = Task()
    with AdaptiveCompression(task.opt, controller="hold", energy_meter=modelled()) as hook:
        assert isinstance(hook.controller, StaticController) and not hook.decisions  # no first decision
        task.train(hook, 100)
    assert task.opt.setting == R8B8 and hook.counters["setting_changes"] == 0
    path = f"learned:{load_default_policy().artifact.manifest_path}"
    with AdaptiveCompression(Task().opt, controller=path, energy_meter=modelled(), profile=None) as hook:
        assert isinstance(hook.controller, LearnedPolicy) and hook.controller is not load_default_policy()
        assert hook.controller.name == "tinyformer-ppo"
    with AdaptiveCompression(Task().opt, controller="learned", energy_meter=modelled(), profile=None) as hook:
        assert hook.controller is load_default_policy()
    with pytest.raises(ValueError, match=r"unknown controller 'lerned'.*'learned:<artifact path>'"):
        AdaptiveCompression(Task().opt, controller="lerned")


def test_accordion_by_name_and_nonfinite_loss(caplog: pytest.LogCaptureFixture) -> None:
    task = Task()
    with AdaptiveCompression(
        task.opt, interval_steps=3, controller="accordion", energy_meter=modelled()
    ) as hook:
        assert isinstance(hook.controller, AccordionController)
        task.train(hook, 3)
        with caplog.at_level(logging.WARNING, logger="client.hook"):
            for _ in range(3):
                hook.step(torch.tensor(float("nan")))
        task.train(hook, 3)
    assert [r.loss for r in hook.history][1] == DIVERGED_LOSS
    assert math.isfinite(hook.history[2].loss) and "not finite" in caplog.text


def test_bad_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    class PlainOptimizer:  # what torch.optim.AdamW offers: no compression API
        def __init__(self) -> None:
            self.param_groups: list[dict[str, object]] = []

    with pytest.raises(TypeError, match=r"lacks \['setting'.*MangoAdamW"):
        AdaptiveCompression(PlainOptimizer())
    model = torch.nn.Linear(4, 4)
    opt = MangoAdamW(model.parameters())
    with pytest.raises(ValueError, match="interval_steps"):
        AdaptiveCompression(opt, interval_steps=0)
    monkeypatch.delenv("MANGO_API_KEY", raising=False)
    with pytest.raises(ValueError, match="api_key"):
        AdaptiveCompression(opt, server_url="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="unknown controller"):
        AdaptiveCompression(opt, controller="nope")
    with pytest.raises(ValueError, match=r"sync_ranks=True needs torch\.distributed"):
        AdaptiveCompression(opt, profile=None, sync_ranks=True)
    with pytest.raises(ValueError, match="profile='fast'"):
        AdaptiveCompression(opt, profile="fast")  # type: ignore[arg-type]
    hook = AdaptiveCompression(opt, energy_meter=modelled(), profile=None)
    hook.close()
    hook.close()
    with pytest.raises(RuntimeError, match="closed"):
        hook.step(1.0)


def _client_opts(**kw: float) -> dict[str, float]:
    opts = {"timeout_s": 0.5, "retries": 0, "breaker_failures": 2, "breaker_cooldown_s": 0.3}
    opts.update(kw)
    return opts


@pytest.mark.slow  # two server starts: 7-25 s on a shared 2-core machine
def test_training_survives_server_kill_and_reconnects(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    srv = ServiceProcess(port=free_port())
    task = Task()
    srv.start(timeout_s=STARTUP_TIMEOUT_S)
    try:
        hook = AdaptiveCompression(
            task.opt,
            server_url=srv.url,
            api_key=srv.api_key,
            interval_steps=5,
            controller="loraven",
            energy_meter=modelled(),
            decision_log=log,
            job_id="hook-kill-test",
            client_options=_client_opts(),
            profile=None,
        )
        with hook:
            task.train_until(hook, lambda: hook.counters["service_decisions"] >= 2)
            srv.stop()
            n_before = len(task.step_s)
            task.train_until(hook, lambda: hook.counters["fallbacks"] >= 3)
            down_max_s = max(task.step_s[n_before:])
            srv.start(timeout_s=STARTUP_TIMEOUT_S)  # same port, same keys
            service_before = hook.counters["service_decisions"]
            task.train_until(hook, lambda: hook.counters["service_decisions"] > service_before)
    finally:
        srv.close()
    counters = hook.counters
    assert counters["client_reconnects"] >= 1, counters
    assert down_max_s < 0.3, f"a step waited {down_max_s:.3f} s while the server was down"
    sources = [json.loads(x)["source"] for x in log.read_text().splitlines()]
    i_fb = sources.index("fallback")
    assert "service" in sources[:i_fb] and "service" in sources[i_fb:]
    first, *answers = hook.decisions
    assert first.policy == "first:prior" and first.step == 0  # decided before the first interval
    for e in answers:
        assert e.step > e.request_step  # a service/fallback answer applies at a later step
    fb = [e for e in hook.decisions if e.source == "fallback"]
    assert all(e.policy == "fallback:loraven" for e in fb)


def test_slow_server_never_blocks_a_step() -> None:
    task = Task()
    slow = TrickleServer(gap_s=5.0)  # the first byte of the answer after 5 s
    try:
        hook = AdaptiveCompression(
            task.opt,
            server_url=slow.url,
            api_key="unchecked-key-0123456789",
            interval_steps=5,
            energy_meter=modelled(),
            client_options=_client_opts(timeout_s=0.3),
            profile=None,
        )
        with hook:
            task.train_until(hook, lambda: hook.counters["fallbacks"] >= 2, timeout_s=15.0)
    finally:
        slow.close()
    assert max(task.step_s) < 1.0, f"a step took {max(task.step_s):.3f} s against a 5 s server"
    assert hook.counters["service_decisions"] == 0
    assert all(
        e.source == "fallback" and ("timeout" in e.reason or "circuit" in e.reason)
        for e in hook.decisions
        if e.policy != "first:prior"
    )


def test_wrong_key_shows_as_auth_error_in_the_hook_summary(caplog: pytest.LogCaptureFixture) -> None:
    task = Task()
    with ServiceProcess() as srv:
        srv.start(timeout_s=STARTUP_TIMEOUT_S)
        hook = AdaptiveCompression(
            task.opt,
            server_url=srv.url,
            api_key="not-the-key-0123456789",
            interval_steps=5,
            energy_meter=modelled(),
            client_options=_client_opts(),
            profile=None,
        )
        with caplog.at_level(logging.INFO, logger="client"), hook:
            task.train_until(hook, lambda: hook.counters["fallbacks"] >= 2)
            assert hook.service_status == "auth_error"
    closed = [r for r in caplog.records if "closed: service" in r.getMessage()]
    assert closed[-1].levelno == logging.ERROR and "refused the API key" in closed[-1].getMessage()
    assert hook.counters["client_auth_errors"] >= 2 and hook.counters["client_failures"] == 0


def test_shadow_mode_logs_but_never_applies(tmp_path: Path) -> None:
    task = Task()
    log = tmp_path / "shadow.jsonl"
    ctl = AccordionController(threshold=1e-9)  # always "critical": wants r32/b8
    with AdaptiveCompression(
        task.opt,
        interval_steps=4,
        controller=ctl,
        energy_meter=modelled(),
        decision_log=log,
        apply_decisions=False,
    ) as hook:
        task.train(hook, 12)
    assert task.opt.setting == R8B8 and hook.counters["setting_changes"] == 0
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == 3 and all(x["shadow"] and not x["changed"] for x in lines)
    assert lines[0]["setting"] == {"rank": 32, "bits": 8, "gamma": 0.0}


class _StubClient:
    """A PolicyClient stand-in: answers each submitted window with r0/b8/g0 when ``release()`` is called."""

    def __init__(self) -> None:
        self.pending: list[int] = []
        self.ready: list[DecisionOutcome] = []
        self.counters: dict[str, int] = {}

    @property
    def has_outcome(self) -> bool:
        return bool(self.ready)

    def poll(self) -> DecisionOutcome | None:
        return self.ready.pop() if self.ready else None

    def submit(self, history: list[TelemetryRecord], reference: object = None) -> None:
        self.pending.append(history[-1].step)

    def release(self) -> None:
        d = Decision(setting=CompressionSetting.parse("r0/b8/g0"), policy="stub", policy_version="1")
        self.ready = [DecisionOutcome(d, "service", self.pending[-1], 1.0)]

    def close(self) -> None:
        pass


def test_first_decision_and_answers_apply_at_the_next_step() -> None:
    """Issue 13: the first interval runs the first decision, and a service answer applies at the first step
    after it arrives, not at the next interval boundary."""
    model = torch.nn.Linear(64, 64)
    opt = MangoAdamW(model.parameters(), min_compress_numel=512)
    hook = AdaptiveCompression(
        opt,
        objective=Objective(w_loss=2.0, w_memory=1.0),
        interval_steps=10,
        first_decision=True,
        profile=None,
    )
    assert hook.decisions[0].policy == "first:prior" and opt.setting != CompressionSetting.off()
    stub = _StubClient()
    hook._client = stub  # type: ignore[assignment]
    x = torch.randn(8, 64)
    for _ in range(10):
        loss = model(x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        hook.step(loss.detach())
    assert stub.pending == [10]  # the window went out at the boundary
    stub.release()
    loss = model(x).pow(2).mean()
    loss.backward()
    opt.step()
    hook.step(loss.detach())  # step 11: the answer is applied here
    assert opt.setting == CompressionSetting.parse("r0/b8/g0") and hook.decisions[-1].step == 11
