"""The steady fused step replayed from a CUDA graph (client/compression/step_graph.py).

The recording needs a GPU (``-m gpu``: replayed against the eager step, value by value); what the replay
relies on is tested here on the CPU too: the step's scalars and rounding key come from device buffers that
:func:`~client.compression.fused.prepare` writes, and a graph's key names every module knob the launches read.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
import warnings

import pytest
import torch

from client.compression import MangoAdamW, fused, step_graph
from client.compression.kernels import available
from client.protocol import CompressionSetting as S

pytestmark = pytest.mark.skipif(
    not available() or not (torch.cuda.is_available() or fused.fused_available(torch.device("cpu"))),
    reason="Triton kernels unavailable: install triton, run with TRITON_INTERPRET=1 (make test) or on CUDA",
)

LR = 1e-2
SHAPES = [(64, 256), (256, 64), (48, 100), (64,)]  # wide, tall (transposed canonical view), odd, exact


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _params() -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter((torch.randn(s, generator=gen) * 0.1).to(_device())) for s in SHAPES]


def _set_grads(params: list[torch.nn.Parameter], k: int, misaligned: bool = False) -> None:
    """Step ``k``'s gradients: fresh tensors (their addresses may move), or with ``misaligned`` views of one
    flat buffer at an odd offset (not 16-byte aligned: the launches' ``ALIGN`` specialization changes)."""
    gen = torch.Generator().manual_seed(100 + k)
    grads = [torch.randn(p.shape, generator=gen) * 0.01 for p in params]
    if not misaligned:
        for p, g in zip(params, grads):
            p.grad = g.to(p.device)
        return
    flat = torch.zeros(1 + sum(g.numel() for g in grads), device=params[0].device)
    at = 1
    for p, g in zip(params, grads):
        p.grad = flat[at : at + g.numel()].view(g.shape).copy_(g.to(p.device))
        at += g.numel()


def _launch_globals() -> set[str]:
    """The module-level upper-case names of :mod:`fused` that ``launch`` reads, itself or through the
    functions of the module it calls (transitively)."""
    knobs = {k for k in vars(fused) if re.fullmatch(r"[A-Z][A-Z0-9_]*", k)}
    seen: set[str] = set()
    todo = ["launch"]
    names: set[str] = set()
    while todo:
        fn = todo.pop()
        if fn in seen:
            continue
        seen.add(fn)
        tree = ast.parse(textwrap.dedent(inspect.getsource(getattr(fused, fn))))
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                if node.id in knobs:
                    names.add(node.id)
                elif inspect.isfunction(getattr(fused, node.id, None)):
                    todo.append(node.id)
    return names


def test_the_graph_key_names_every_knob_the_launches_read() -> None:
    """A recorded step keeps the module knobs it was recorded with: every one ``launch`` reads (itself or in
    the helpers it calls) must be in ``LAUNCH_KNOBS``, so that changing it re-records."""
    read = _launch_globals()
    assert {"PROJ_BN", "MATRIX_ALIGN", "DRAWS"} <= read  # the walk finds the knobs of launch and its helpers
    assert read <= set(step_graph.LAUNCH_KNOBS), sorted(read - set(step_graph.LAUNCH_KNOBS))


def test_prepare_writes_the_step_scalars_and_draws_one_key_a_step() -> None:
    """The kernels read ``1 - lr wd``, ``lr / bc1`` and ``1 / sqrt(bc2)`` from the plan's buffer: after a
    step it holds that step's values (float32 of the double-precision host values, as a float kernel argument
    was), and the rounding key is one draw a step from the optimizer's generator, as before the buffer."""
    params = _params()
    opt = MangoAdamW(
        params,
        lr=LR,
        weight_decay=0.1,
        setting=S(rank=0, bits=4),
        min_compress_numel=1024,
        fused=True,
        seed=5,
    )
    _set_grads(params, 0)
    opt.step()  # creates the states (torch path)
    ref = torch.Generator(device=opt._gen.device).manual_seed(5)
    ref.set_state(opt._gen.get_state())
    for k in (1, 2, 3):
        opt.param_groups[0]["lr"] = LR * k
        _set_grads(params, k)
        opt.step()
        plan = opt._plan
        assert plan is not None and plan.scalars is not None and plan.seed is not None
        for i, grp in enumerate(plan.groups):
            step = grp.states[0]["step"]
            beta1, beta2 = grp.hyper["betas"]
            want = [1 - LR * k * 0.1, LR * k / (1 - beta1**step), 1 / (1 - beta2**step) ** 0.5]
            assert plan.scalars[i, :3].tolist() == torch.tensor(want, dtype=torch.float32).tolist()
        key = torch.randint(0, 2**31 - 1, (1,), generator=ref, device=ref.device)
        assert int(plan.seed) == int(key)


def _run(graphed: bool, setting: S, steps: int) -> tuple[list[torch.nn.Parameter], MangoAdamW]:
    params = _params()
    opt = MangoAdamW(
        params, lr=LR, weight_decay=0.1, setting=setting, min_compress_numel=1024, fused=True, seed=3,
        refresh_every=4,
    )  # fmt: skip
    opt.graph_step = graphed
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 / (1 + 0.1 * k))
    for k in range(steps):
        _set_grads(params, k, misaligned=k == 7)  # a step under another key: eager, then re-recorded
        opt.step()
        sched.step()
    return params, opt


@pytest.mark.gpu
@pytest.mark.parametrize(
    "setting",
    [S(rank=0, bits=8), S(rank=0, bits=4, gamma=1.0), S(rank=8, bits=4), S(rank=16, bits=32, gamma=0.5)],
)
def test_the_replayed_step_equals_the_eager_step(setting: S) -> None:
    """Replayed from the graph (refresh steps, a changing learning rate, moving and misaligned gradients
    among the steps), the step gives the eager step's parameters and states value by value, with stochastic
    rounding where the setting has it, and its statistics."""
    if not torch.cuda.is_available():
        pytest.skip("CUDA graphs need a GPU")
    (pg, og), (pe, oe) = _run(True, setting, 16), _run(False, setting, 16)
    plan = og._plan
    assert plan is not None and isinstance(plan.step_graph, step_graph.StepGraph)
    assert plan.captures == 2  # recorded, then recorded again after the misaligned steps
    assert oe._plan is not None and oe._plan.step_graph is None
    for a, b in zip(pg, pe):
        assert torch.equal(a, b), setting.label()
        for k, v in og.state[a].items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, oe.state[b][k]), (setting.label(), k)
    # the statistics up to float rounding: a tile or a projection program adds its sum g^2 into the norm with
    # an atomic, in whatever order the programs end (two eager runs differ alike; an H100 read 1 ulp)
    sg, se = dataclasses.asdict(og.compression_stats()), dataclasses.asdict(oe.compression_stats())
    assert sg == pytest.approx(se, rel=1e-5, abs=1e-12)


@pytest.mark.gpu
def test_a_failed_capture_leaves_the_plan_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step that cannot be recorded (simulated: the capture raises) warns once and steps eagerly, with the
    eager step's results."""
    if not torch.cuda.is_available():
        pytest.skip("CUDA graphs need a GPU")

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(torch.cuda.CUDAGraph, "capture_begin", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pg, og = _run(True, S(rank=8, bits=8), 6)
    assert sum("capture failed" in str(w.message) for w in caught) == 1
    assert og._plan is not None and og._plan.step_graph is False
    monkeypatch.undo()
    pe, _ = _run(False, S(rank=8, bits=8), 6)
    assert all(torch.equal(a, b) for a, b in zip(pg, pe))


@pytest.mark.gpu
def test_recording_the_step_into_a_callers_graph_is_refused() -> None:
    """``MangoAdamW`` is not capturable (its step counts and learning rate are host values): a step inside the
    caller's own CUDA graph capture raises a message that says so, and builds no plan from the capture."""
    if not torch.cuda.is_available():
        pytest.skip("CUDA graphs need a GPU")
    params = _params()
    opt = MangoAdamW(params, lr=LR, setting=S(rank=8, bits=8), min_compress_numel=1024, fused=True)
    _set_grads(params, 0)
    opt.step()
    opt._plan = None
    refused = pytest.raises(RuntimeError, match="cannot be recorded into a CUDA graph")
    with refused, torch.cuda.graph(torch.cuda.CUDAGraph()):
        opt.step()
    assert opt._plan is None
