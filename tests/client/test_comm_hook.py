"""The DDP communication hook on gloo/CPU: exactness when off, error feedback, rank agreement, resume.

Distributed tests run on one pair of worker processes started once per module (spawn, gloo, a FileStore
rendezvous under a temp dir: no ports), so each test pays for its own work only, not for two interpreter
starts. Jobs are top-level functions ``fn(rank, *args)`` that assert inside the workers; a failure comes back
as the worker's traceback (and the pair is restarted for the next test). The model is a tiny MLP whose
buckets are small enough that DDP splits and then rebuilds them, so the per-parameter re-mapping of the
hook's buffers is exercised too.
"""

from __future__ import annotations

import copy
import datetime
import math
import os
import queue
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from client.compression.comm_hook import MangoHookState, broadcast_setting, mango_comm_hook
from client.controllers import Controller
from client.protocol import CompressionSetting

WORLD = 2
BUCKET_MB = 0.002  # ~500 floats per bucket: several buckets, rebuilt after the first step
JOB_TIMEOUT_S = 120.0


def _serve(rank: int, store_path: str, jobs: Any, results: Any) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        store=dist.FileStore(store_path, WORLD),
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=60),  # a rank that failed mid-job releases the other one
    )
    try:
        while (job := jobs.get()) is not None:
            fn, args = job
            try:
                fn(rank, *args)
                results.put((rank, None))
            except BaseException:
                results.put((rank, traceback.format_exc()))
    finally:
        dist.destroy_process_group()


class _Pair:
    """Two gloo ranks waiting for jobs."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self._dir = tempfile.TemporaryDirectory()
        store = os.path.join(self._dir.name, "store")
        self.jobs = [ctx.Queue() for _ in range(WORLD)]
        self.results = ctx.Queue()
        self.procs = [
            ctx.Process(target=_serve, args=(r, store, self.jobs[r], self.results), daemon=True)
            for r in range(WORLD)
        ]
        for p in self.procs:
            p.start()
        self.healthy = True

    def run(self, fn: Any, *args: Any) -> None:
        for q in self.jobs:
            q.put((fn, args))
        errors = []
        try:
            for _ in range(WORLD):
                rank, err = self.results.get(timeout=JOB_TIMEOUT_S)
                if err is not None:
                    errors.append(f"rank {rank}:\n{err}")
        except queue.Empty:
            errors.append(f"no answer within {JOB_TIMEOUT_S} s (a rank hung or died)")
        if errors:
            self.healthy = False
            pytest.fail("\n".join(errors), pytrace=False)

    def close(self) -> None:
        for q in self.jobs:
            q.put(None)
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
        self._dir.cleanup()


_PAIR: list[_Pair] = []


@pytest.fixture(scope="module")
def _pairs() -> Iterator[list[_Pair]]:
    yield _PAIR
    while _PAIR:
        _PAIR.pop().close()


@pytest.fixture()
def pair(_pairs: list[_Pair]) -> _Pair:
    """The module's worker pair, restarted if the previous test broke it."""
    if _pairs and not _pairs[0].healthy:
        _pairs.pop().close()
    if not _pairs:
        _pairs.append(_Pair())
    return _pairs[0]


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    # 32x8 and 32x32 are factored at rank <= 2 (PowerSGD's rate test); 4x32 and the biases travel plain.
    return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4))


def _batch(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(16, 8, generator=gen), torch.randn(16, 4, generator=gen)


def _loss(model: nn.Module, step: int, rank: int) -> torch.Tensor:
    x, y = _batch(step, rank)
    return nn.functional.mse_loss(model(x), y)


def _gather(t: torch.Tensor) -> list[torch.Tensor]:
    out = [torch.empty_like(t) for _ in range(WORLD)]
    dist.all_gather(out, t.contiguous())
    return out


def _flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _flat_buffers(state: MangoHookState, model: nn.Module, kind: str) -> torch.Tensor:
    params = state.state_dict()["params"]
    parts = []
    for name, p in model.named_parameters():
        t = params.get(name, {}).get(kind)
        parts.append(t.reshape(-1) if t is not None else torch.zeros(p.numel()))
    return torch.cat(parts)


# ------------------------------------------------------------------------------------------- workers
def _w_off_equals_ddp(rank: int) -> None:
    plain = _model()
    hooked = copy.deepcopy(plain)
    ddp_plain = DDP(plain, bucket_cap_mb=BUCKET_MB)
    ddp_hooked = DDP(hooked, bucket_cap_mb=BUCKET_MB)
    state = MangoHookState(setting=CompressionSetting.off(), module=hooked)
    ddp_hooked.register_comm_hook(state, mango_comm_hook)
    opt_p = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)
    opt_h = torch.optim.SGD(hooked.parameters(), lr=0.1, momentum=0.9)
    n = sum(p.numel() for p in plain.parameters())
    for step in range(3):
        for ddp, opt in ((ddp_plain, opt_p), (ddp_hooked, opt_h)):
            opt.zero_grad()
            _loss(ddp, step, rank).backward()
        for a, b in zip(plain.parameters(), hooked.parameters()):
            assert a.grad is not None and b.grad is not None
            assert torch.equal(a.grad, b.grad), f"step {step}: off-hook gradient differs from plain DDP"
        opt_p.step()
        opt_h.step()
        st = state.stats()
        assert st["comm_bytes"] == 4 * n, st  # fp32, every value once
        assert st["comm_wire_bytes"] == 4 * n  # ring: 2 (W - 1) / W = 1 at W = 2
    assert torch.equal(_flat_params(plain), _flat_params(hooked))
    assert state.telemetry()["comm_bytes"] == 4 * n


def _w_error_feedback(rank: int, settings: list[tuple[int, int, float]]) -> None:
    model = _model()
    replica = copy.deepcopy(model)  # the local, un-synchronized gradient g_i
    ddp = DDP(model, bucket_cap_mb=BUCKET_MB)
    state = MangoHookState(module=model)
    ddp.register_comm_hook(state, mango_comm_hook)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    n = sum(p.numel() for p in model.parameters())
    for step, (r, b, g) in enumerate(settings):
        state.apply_setting(CompressionSetting(rank=r, bits=b, gamma=g))
        replica.load_state_dict(model.state_dict())
        replica.zero_grad()
        _loss(replica, step, rank).backward()
        g_local = torch.cat([p.grad.reshape(-1) for p in replica.parameters() if p.grad is not None])
        e_old = _flat_buffers(state, model, "e")
        opt.zero_grad()
        _loss(ddp, step, rank).backward()
        g_hat = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
        e_new = _flat_buffers(state, model, "e")
        # feedback.shift_compress on rank i: e_new_i = e_i + (1 - gamma) (g_i - gamma h - sent_i) (beta = 1).
        # Averaged over ranks, with g_hat = gamma h + mean(sent):
        #   mean(e_new) == mean(e_old) + (1 - gamma) (mean(g) - g_hat)
        # and at gamma = 0 this is "sent + residual == original": mean(g + e_old) == g_hat + mean(e_new).
        g_mean = torch.stack(_gather(g_local)).mean(0)
        lhs = torch.stack(_gather(e_new)).mean(0)
        rhs = torch.stack(_gather(e_old)).mean(0) + (1.0 - g) * (g_mean - g_hat)
        # bits=16 all-reduces in bf16: the sum's own rounding (2^-9 relative) is outside the residual.
        tol = (2.0**-7 if b == 16 else 1e-5) * float(g_mean.abs().max() + lhs.abs().max())
        assert torch.allclose(lhs, rhs, atol=tol, rtol=0), (step, float((lhs - rhs).abs().max()))
        lossy = not (r == 0 and b == 32)
        if lossy and g < 1.0:
            assert float(e_new.norm()) > 1e-4 * float(g_local.norm()), f"step {step}: no residual kept"
        st = state.stats()
        flags = 4 * len(state._buckets)  # the 4-byte non-finite verdict per compressed bucket
        assert st["comm_bytes"] < (4 * n if lossy else 4 * n + flags + 1), st
        opt.step()


def _w_ranks_agree(rank: int) -> None:
    model = _model()
    ddp = DDP(model, bucket_cap_mb=BUCKET_MB)
    state = MangoHookState(module=model, setting=CompressionSetting(rank=2, bits=4, gamma=0.0))
    ddp.register_comm_hook(state, mango_comm_hook)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    schedule: dict[int, CompressionSetting | str] = {
        2: CompressionSetting(rank=0, bits=2, gamma=0.5),
        4: "broadcast",
        5: CompressionSetting(rank=1, bits=16, gamma=0.0),
        6: CompressionSetting.off(),  # flushes the residual
        7: CompressionSetting(rank=4, bits=3, gamma=1.0),
        9: CompressionSetting(rank=8, bits=32, gamma=0.25),
    }
    for step in range(11):
        todo = schedule.get(step)
        if todo == "broadcast":
            # Only rank 0 knows the decision (its own RNG); the others pass None.
            gen = torch.Generator().manual_seed(123 + rank)
            grid = [CompressionSetting(rank=r, bits=b, gamma=0.75) for r in (1, 2, 4) for b in (2, 3, 4, 8)]
            mine = grid[int(torch.randint(len(grid), (1,), generator=gen))] if rank == 0 else None
            decided = broadcast_setting(mine, src=0)
            assert [s.model_dump() for s in _all_objects(decided)] == [decided.model_dump()] * WORLD
            state.apply_setting(decided)
        elif isinstance(todo, CompressionSetting):
            state.apply_setting(todo)
        opt.zero_grad()
        _loss(ddp, step, rank).backward()
        opt.step()
        params = _gather(_flat_params(model))
        assert torch.equal(params[0], params[1]), (
            f"ranks diverged after step {step} ({state.setting.label()})"
        )
        h = _gather(_flat_buffers(state, model, "h"))
        assert torch.equal(h[0], h[1]), f"reference h differs across ranks after step {step}"
    assert state.stats()["layout_changes"] >= 1  # DDP rebuilt its buckets after step 0
    if rank == 1:
        with pytest.raises(ValueError, match="must pass a CompressionSetting"):
            broadcast_setting(None, src=1)
    else:
        with pytest.raises(ValueError):
            broadcast_setting(None, src=0)


class _RankSpecificController(Controller):
    """Decides differently on each rank, so a rank that decided for itself would diverge."""

    name = "rank-specific"

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.calls = 0

    def decide(self, history: Any, objective: Any, **context: Any) -> CompressionSetting:
        self.calls += 1
        ranks = (1, 2, 4) if self.rank == 0 else (8, 16, 32)
        return CompressionSetting(rank=ranks[self.calls % 3], bits=4, gamma=0.0)


def _train_in_step(ddp: nn.Module, opt: Any, hook: Any, rank: int, target: Any) -> list[CompressionSetting]:
    """8 steps of ``ddp`` with ``hook``; the parameters equal on every rank after each step; the hook is
    closed. Returns ``target.setting`` (the comm hook's state or the optimizer) after each step."""
    seen = []
    for step in range(8):
        opt.zero_grad()
        loss = _loss(ddp, step, rank)
        loss.backward()
        opt.step()
        hook.step(loss.detach())
        seen.append(target.setting)
        params = _gather(_flat_params(ddp.module))
        assert torch.equal(params[0], params[1]), f"ranks diverged after step {step}"
    hook.close()
    return seen


def _w_adaptive_ddp(rank: int) -> None:
    """AdaptiveCompression in DDP mode: rank 0 decides, every rank applies the broadcast setting."""
    from client.compression import MangoAdamW
    from client.hook import AdaptiveCompression

    model = _model()
    ddp = DDP(model, bucket_cap_mb=BUCKET_MB)
    state = MangoHookState(module=model, setting=CompressionSetting(rank=2, bits=8, gamma=0.0))
    ddp.register_comm_hook(state, mango_comm_hook)
    opt = MangoAdamW(model.parameters(), lr=1e-2, setting=CompressionSetting.off())
    controller = _RankSpecificController(rank)
    hook = AdaptiveCompression(opt, comm_state=state, controller=controller, interval_steps=2)
    seen = _train_in_step(ddp, opt, hook, rank, state)
    assert [s.model_dump() for s in _all_objects(state.setting)] == [state.setting.model_dump()] * WORLD
    assert state.setting.rank in (1, 2, 4)  # rank 0's choices, never rank 1's
    assert opt.setting == CompressionSetting.off()  # DDP mode controls communication, not the optimizer
    assert controller.calls == (4 if rank == 0 else 0)  # only rank 0 decides
    assert len({s.rank for s in seen}) > 1  # the setting really changed between intervals
    records = hook.history
    assert records and all(r.comm_bytes > 0 for r in records)
    # each record carries the setting in force during its interval: the one applied at the previous boundary
    assert records[0].setting == CompressionSetting(rank=2, bits=8, gamma=0.0)
    assert [r.setting for r in records[1:]] == seen[1::2][:-1]


def _w_adaptive_optimizer_ddp(rank: int) -> None:
    """AdaptiveCompression on MangoAdamW in a plain DDP job (no comm hook): the optimizer's setting is the
    job's, so rank 0 decides it, the first decision included, and every rank applies it; ranks that decided
    for themselves (here: different objectives and controllers) would step different updates."""
    from client.compression import MangoAdamW
    from client.hook import AdaptiveCompression
    from client.protocol import Objective

    model = _model()
    ddp = DDP(model, bucket_cap_mb=BUCKET_MB)
    opt = MangoAdamW(model.parameters(), lr=1e-2, setting=CompressionSetting.off(), min_compress_numel=64)
    controller = _RankSpecificController(rank)
    objective = Objective(w_loss=1.0) if rank == 0 else Objective(w_loss=0.1, w_memory=1.0)
    hook = AdaptiveCompression(
        opt, controller=controller, objective=objective, interval_steps=2, first_decision=True, profile=None
    )
    first = _all_objects(opt.setting)
    assert first[0] == first[1], f"first decisions differ across ranks: {first}"
    seen = _train_in_step(ddp, opt, hook, rank, opt)
    assert opt.setting.rank in (1, 2, 4)  # rank 0's choices, never rank 1's
    assert controller.calls == (4 if rank == 0 else 0)  # only rank 0 decides
    assert len({s.rank for s in seen}) > 1


def _w_service_from_rank_0_only(rank: int) -> None:
    """Every rank given the service URL: only rank 0's hook talks to the service (the others follow)."""
    from client.compression import MangoAdamW
    from client.hook import AdaptiveCompression
    from client.protocol import Objective

    model = _model()
    opt = MangoAdamW(model.parameters(), lr=1e-2)
    hook = AdaptiveCompression(
        opt, server_url="http://127.0.0.1:9", api_key="k" * 24, controller="static", profile=None
    )
    assert (hook.policy_client is not None) == (rank == 0)
    hook.close()
    # ranks that train separate models opt out: each decides for itself (here: its own objective's first
    # setting), with no collective
    own = AdaptiveCompression(
        MangoAdamW(_model().parameters(), lr=1e-2),
        objective=Objective(w_loss=1.0) if rank == 0 else Objective(w_loss=0.1, w_memory=1.0),
        controller="static", first_decision=True, profile=None, sync_ranks=False,
    )  # fmt: skip
    assert own.optimizer.setting == (
        CompressionSetting.off() if rank == 0 else CompressionSetting.parse("r64/b4")
    )
    own.close()


def _all_objects(obj: CompressionSetting) -> list[CompressionSetting]:
    out: list[Any] = [None] * WORLD
    dist.all_gather_object(out, obj)
    return out


_RESUME_SETTINGS = [(2, 4, 0.5), (2, 4, 0.5), (0, 3, 0.0), (4, 8, 0.25), (4, 8, 0.25), (1, 2, 1.0)]


def _train(
    ddp: nn.Module, opt: torch.optim.Optimizer, state: MangoHookState, steps: range, rank: int
) -> None:
    for step in steps:
        r, b, g = _RESUME_SETTINGS[step]
        state.apply_setting(CompressionSetting(rank=r, bits=b, gamma=g))
        opt.zero_grad()
        _loss(ddp, step, rank).backward()
        opt.step()


def _fresh(rank: int) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer, MangoHookState]:
    model = _model()
    ddp = DDP(model, bucket_cap_mb=BUCKET_MB)
    state = MangoHookState(module=model, seed=7)
    ddp.register_comm_hook(state, mango_comm_hook)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return model, ddp, opt, state


def _w_resume(rank: int, ckpt_dir: str) -> None:
    total = len(_RESUME_SETTINGS)
    model, ddp, opt, state = _fresh(rank)
    _train(ddp, opt, state, range(total), rank)
    uninterrupted = _flat_params(model)

    model, ddp, opt, state = _fresh(rank)
    _train(ddp, opt, state, range(3), rank)
    path = os.path.join(ckpt_dir, f"ckpt_rank{rank}.pt")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "hook": state.state_dict()}, path)
    del model, ddp, opt, state

    model, ddp, opt, state = _fresh(rank)  # a new DDP: it rebuckets again on its first step
    ckpt = torch.load(path, weights_only=False)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    state.load_state_dict(ckpt["hook"])
    assert state.iter == 3
    _train(ddp, opt, state, range(3, total), rank)
    assert torch.equal(_flat_params(model), uninterrupted), "resumed run differs from the uninterrupted one"
    with pytest.raises(ValueError, match="saved by rank"):
        other = torch.load(os.path.join(ckpt_dir, f"ckpt_rank{1 - rank}.pt"), weights_only=False)
        state.load_state_dict(other["hook"])


_BAD_STEP = 2


def _nonfinite_run(
    rank: int, setting: tuple[int, int, float], poison: float | None, skip_bad_step: bool, mango_opt: bool
) -> tuple[nn.Module, MangoHookState, list[float]]:
    """Five steps; at ``_BAD_STEP`` rank 1's first-layer gradient gets ``poison`` (or the step is skipped)."""
    model = _model()
    ddp = DDP(model, bucket_cap_mb=BUCKET_MB)
    state = MangoHookState(module=model, seed=3, stochastic=False)
    state.apply_setting(CompressionSetting(rank=setting[0], bits=setting[1], gamma=setting[2]))
    ddp.register_comm_hook(state, mango_comm_hook)
    opt: torch.optim.Optimizer
    if mango_opt:
        from client.compression.optimizer import MangoAdamW

        opt = MangoAdamW(model.parameters(), lr=0.01, setting=CompressionSetting.off())
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    first = next(iter(model.parameters()))
    losses = []
    for step in range(5):
        if step == _BAD_STEP and skip_bad_step:
            continue
        opt.zero_grad()
        handle = None
        if step == _BAD_STEP and rank == 1 and poison is not None:
            handle = first.register_hook(
                lambda g, v=poison: g.clone().index_fill_(0, torch.tensor([0]), v)  # type: ignore[misc]
            )
        loss = _loss(ddp, step, rank)
        loss.backward()
        if handle is not None:
            handle.remove()
        if mango_opt or not state.last_step_nonfinite:  # MangoAdamW skips NaN tensors by itself
            opt.step()
        losses.append(float(loss.detach()) if step != _BAD_STEP else math.nan)
    return model, state, losses


def _w_nonfinite(rank: int, settings: list[tuple[int, int, float]], poisons: list[float]) -> None:
    for setting, poison in zip(settings, poisons):
        model, state, losses = _nonfinite_run(rank, setting, poison, skip_bad_step=False, mango_opt=False)
        ref, ref_state, ref_losses = _nonfinite_run(rank, setting, None, skip_bad_step=True, mango_opt=False)
        where = f"setting {setting}, poison {poison}"
        params = _flat_params(model)
        assert bool(torch.isfinite(params).all()), where
        a, b = _gather(params)
        assert torch.equal(a, b), f"ranks differ after a non-finite step ({where})"
        for kind in ("e", "h"):
            buf = _flat_buffers(state, model, kind)
            assert bool(torch.isfinite(buf).all()), f"{kind} not finite ({where})"
            assert torch.equal(buf, _flat_buffers(ref_state, ref, kind)), (
                f"{kind} differs from skipping ({where})"
            )
        assert torch.equal(params, _flat_params(ref)), f"not the run with the step skipped ({where})"
        after = [x for x in losses if not math.isnan(x)]
        assert after == ref_losses, where  # the loss curve after the bad step matches the skipped run
        assert state.nonfinite_steps == 1 and ref_state.nonfinite_steps == 0, where
        assert state.stats()["nonfinite_steps"] == 1.0
        # MangoAdamW needs no flag check: every bucket of the step is NaN, so it skips every tensor
        model, state, _ = _nonfinite_run(rank, setting, poison, skip_bad_step=False, mango_opt=True)
        ref, _, _ = _nonfinite_run(rank, setting, None, skip_bad_step=True, mango_opt=True)
        params = _flat_params(model)
        a, b = _gather(params)
        assert bool(torch.isfinite(params).all()) and torch.equal(a, b), where
        assert torch.equal(params, _flat_params(ref)), f"MangoAdamW: not the skipped run ({where})"


# --------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("poison", [math.nan, math.inf, -math.inf])
def test_nonfinite_gradient_on_one_rank_is_skipped_on_every_rank(pair: _Pair, poison: float) -> None:
    settings = [(0, 32, 0.0), (0, 16, 0.0), (0, 8, 0.0), (0, 4, 0.5), (0, 2, 0.0), (2, 8, 0.0), (2, 4, 1.0)]
    pair.run(_w_nonfinite, settings, [poison] * len(settings))


def test_off_equals_plain_ddp(pair: _Pair) -> None:
    pair.run(_w_off_equals_ddp)


def test_error_feedback_invariant(pair: _Pair) -> None:
    settings = [(2, 4, 0.0), (2, 4, 0.0), (0, 2, 0.0), (0, 2, 0.5), (1, 8, 1.0), (4, 16, 0.25), (0, 32, 0.0)]
    pair.run(_w_error_feedback, settings)


def test_ranks_identical_through_setting_changes(pair: _Pair) -> None:
    pair.run(_w_ranks_agree)


def test_adaptive_compression_drives_the_hook_from_rank_0(pair: _Pair) -> None:
    pair.run(_w_adaptive_ddp)


def test_adaptive_compression_of_the_optimizer_decides_on_rank_0(pair: _Pair) -> None:
    pair.run(_w_adaptive_optimizer_ddp)


def test_only_rank_0_talks_to_the_service(pair: _Pair) -> None:
    pair.run(_w_service_from_rank_0_only)


def test_resume_is_bit_exact(pair: _Pair, tmp_path: Path) -> None:
    pair.run(_w_resume, str(tmp_path))


# --------------------------------------------------------------------------- single process (world 1)
@pytest.fixture()
def world1(tmp_path: Path) -> Any:
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "s1"), 1), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_shared_scale_code_is_unbiased_and_counted(world1: Any, bits: int) -> None:
    state = MangoHookState(setting=CompressionSetting(rank=0, bits=bits, gamma=0.0))
    x = torch.randn(1000, generator=torch.Generator().manual_seed(bits))
    draws = 400
    acc = torch.zeros_like(x)
    for _ in range(draws):
        sent, mean = state._send(x, bits)
        assert torch.equal(sent, mean)  # one rank: the mean is its own message
        acc += sent
    block = 256 if bits == 8 else 64
    top = (1 << bits) - 1
    step = 2 * float(x.abs().max()) / top
    # Stochastic rounding: per-value std <= step / 2, so the mean of `draws` is within ~5 sigma.
    assert float((acc / draws - x).abs().max()) < 5 * step / 2 / draws**0.5
    per = 63 // top.bit_length()
    words = -(-(-(-1000 // block) * block) // per)
    assert state._cur.payload_bytes == draws * (8 * words + 4 * -(-1000 // block))


def test_setting_type_is_checked() -> None:
    with pytest.raises(TypeError, match="CompressionSetting"):
        MangoHookState(setting=(4, 4, 0.0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ef_beta"):
        MangoHookState(ef_beta=1.5)


@pytest.mark.slow
def test_ddp_benchmark_cpu_mode_runs(tmp_path: Path) -> None:
    """`python -m benchmarks.ddp --cpu-gloo` end to end on a few steps: one row per configuration."""
    import json

    from benchmarks.ddp import main

    configs = "dense-fp32,blockwise-b4-ef,ratq-b2,simq+-2.5"
    # a 0.1 s timing window (default 1 s): still extended by extra steps, at a tenth of the padding
    argv = ["--cpu-gloo", "--steps", "4", "--warmup", "1", "--eval-batches", "1", "--min-window-s", "0.1"]
    argv += ["--configs", configs]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "summary.json").read_text())["rows"]
    assert [r["config"] for r in rows] == configs.split(",")
    by = {r["config"]: r for r in rows}
    assert by["dense-fp32"]["bits_per_param"] == 32.0
    assert by["blockwise-b4-ef"]["bits_per_param"] == pytest.approx(5.833, abs=0.01)
    assert 2.4 < by["simq+-2.5"]["bits_per_param"] <= 2.5
    assert all(math.isfinite(r["val_loss"]) for r in rows)
