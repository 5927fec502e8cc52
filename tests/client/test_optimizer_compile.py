"""``torch.compile(opt.step)`` on the torch path at r0/b8: no graph breaks (``torch._dynamo.explain``), a
tensor ``lr`` traced as a tensor, the captured graph agrees with the eager step to float rounding, and the
step counter stops recompiling after the first steps."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from client.compression import fused
from client.compression.optimizer import MangoAdamW
from client.protocol import CompressionSetting as S

pytestmark = pytest.mark.slow
R0B8 = S(rank=0, bits=8)


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _make(
    lr: float | torch.Tensor = 1e-2,
    stochastic: bool = False,
    setting: S = R0B8,
    quant_mode: str | None = None,
) -> tuple[torch.nn.Module, MangoAdamW]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 8))
    opt = MangoAdamW(
        net.parameters(), lr=lr, setting=setting, min_compress_numel=256, stochastic_rounding=stochastic,
        quant_mode=quant_mode,
    )  # fmt: skip
    return net, opt


def _backward(net: torch.nn.Module, opt: MangoAdamW, t: int) -> None:
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(t))
    opt.zero_grad()
    net(x).square().mean().backward()


@pytest.mark.parametrize(("lr", "stochastic"), [(1e-2, False), (torch.tensor(1e-2), True)])
def test_step_compiles_without_graph_breaks(lr: float | torch.Tensor, stochastic: bool) -> None:
    net, opt = _make(lr, stochastic)
    _backward(net, opt, 0)
    opt.step()  # states exist: the steady-state step is what gets compiled
    _backward(net, opt, 1)
    ex = torch._dynamo.explain(opt.step)()
    assert ex.graph_break_count == 0, [b.reason for b in ex.break_reasons]
    assert ex.graph_count == 1
    assert isinstance(opt.param_groups[0]["lr"], type(lr))  # a tensor lr is never replaced by a float


@pytest.mark.parametrize("mode", ["nf4", None])
@pytest.mark.parametrize("stochastic", [False, True])
def test_4_bit_step_compiles_without_graph_breaks(stochastic: bool, mode: str | None) -> None:
    """At 4 bits, the default uniform code and NF4 (its codes from the torch quantizer's cell tables, module
    constants): one graph."""
    net, opt = _make(stochastic=stochastic, setting=S(rank=0, bits=4), quant_mode=mode)
    _backward(net, opt, 0)
    opt.step()
    _backward(net, opt, 1)
    ex = torch._dynamo.explain(opt.step)()
    assert ex.graph_break_count == 0, [b.reason for b in ex.break_reasons]


def test_compiled_step_equals_eager_and_stops_recompiling() -> None:
    (a, oa), (b, ob) = _make(), _make(torch.tensor(1e-2))
    step = torch.compile(ob.step, backend="aot_eager")  # the captured graph, run op for op
    for t in range(8):
        for net, opt, fn in ((a, oa, oa.step), (b, ob, step)):
            _backward(net, opt, t)
            fn()
        for p, q in zip(a.parameters(), b.parameters()):
            # a tensor lr multiplies where a float lr is addcdiv's scalar: one rounding apart, which a
            # round-to-nearest code can amplify into one quantization step of one entry
            torch.testing.assert_close(q, p, rtol=0, atol=1e-3)
        if t == 2:
            graphs = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == graphs  # steps 3-7 reuse the graph (step count dynamic)
    assert oa.state_bytes() == ob.state_bytes() > 0


def test_compiled_float_lr_step_agrees_with_eager() -> None:
    (a, oa), (b, ob) = _make(), _make()
    step = torch.compile(ob.step, backend="aot_eager")
    for t in range(4):
        for net, opt, fn in ((a, oa, oa.step), (b, ob, step)):
            _backward(net, opt, t)
            fn()
    # not bit-exact: the captured graph decomposes fused ops (addcdiv), one rounding apart per entry
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-3)
    assert oa.state_bytes() == ob.state_bytes()


def _fused_device() -> torch.device:
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not fused.fused_available(dev):
        pytest.skip("the fused step needs CUDA + triton, or TRITON_INTERPRET=1 on the CPU")
    return dev


def test_compiled_step_runs_the_fused_kernels_eagerly() -> None:
    """``torch.compile(opt.step)`` on the fused path: the fused step is not traced (its host side plans
    from tensor addresses), so the kernels run as in eager mode and the parameters agree."""
    dev = _fused_device()
    nets, opts = [], []
    for _ in range(2):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32)).to(dev)
        nets.append(net)
        opts.append(
            MangoAdamW(
                net.parameters(),
                lr=1e-2,
                setting=R0B8,
                min_compress_numel=256,
                fused=True,
                stochastic_rounding=False,  # compiled, the first step draws from torch's generator
            )
        )
    step = torch.compile(opts[1].step, backend="aot_eager")
    for t in range(3):
        for net, opt, fn in ((nets[0], opts[0], opts[0].step), (nets[1], opts[1], step)):
            x = torch.randn(16, 32, generator=torch.Generator().manual_seed(t)).to(dev)
            opt.zero_grad()
            net(x).square().mean().backward()
            fn()
    assert opts[1]._plan is not None and opts[1]._plan.groups  # the compiled step went through the kernels
    for p, q in zip(nets[0].parameters(), nets[1].parameters()):
        # the first step (states created on the torch path) is traced: one rounding apart at most
        torch.testing.assert_close(q, p, rtol=0, atol=1e-3)
    assert opts[0].compression_stats().skipped_steps == opts[1].compression_stats().skipped_steps == 0
