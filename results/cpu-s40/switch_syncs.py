"""Count the host reads / host<->device transfers of one MangoAdamW.apply_setting and of the first step after it.

CPU only: the GPU path is emulated (fused=True under TRITON_INTERPRET=1, batch_convert=True, and `x.is_cuda`
reads True inside quant.py / refresh.py / lowrank.py for "device" tensors, and transfer.upload takes its CUDA
branch, so their CUDA paths run). Every tensor that
exists before counting starts is a "device" tensor; tensors made on the host (factories without a `device=`
argument, torch.tensor(...) without device, .cpu(), .numpy() views) are "host" tensors, and ops on host
tensors give host tensors (a TorchDispatchMode follows them). What is recorded, with the innermost
client/ frame:

* host reads of a device tensor: .item() .tolist() bool() int() float() index() .cpu() .numpy() and any
  other aten._local_scalar_dense;                                                     -> sync on CUDA
* blocking host->device copies (.to(dev) / copy_ of a host tensor into a device one, torch.tensor(...,
  device=dev)): torch's Copy.cu uses memcpy_and_sync (cudaStreamSynchronize) without non_blocking=True;
  pinned + non_blocking=True copies are listed as no-sync;                              -> sync on CUDA
* data-dependent shapes on device tensors (nonzero, masked_select, bool-mask indexing, unique,
  repeat_interleave without output_size) and linalg ops that check `info` on the host (eigh, svd, cholesky
  without _ex, inv, solve, ...: aten._linalg_check_errors and friends);                 -> sync on CUDA
* the same reads on host tensors are listed too, as "host" (no sync).
Frames inside triton's interpreter are ignored (the kernels themselves read nothing back on a GPU).

Usage:  cd /work/main && PYTHONDONTWRITEBYTECODE=1 TRITON_INTERPRET=1 .venv/bin/python \
            results/cpu-s40/switch_syncs.py [--layers 2] [--embd 256]
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import sys
import threading
import weakref
from typing import Any

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1 (the fused kernels on CPU)"

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_leaves  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
PROJ = os.path.join(ROOT, "client") + os.sep
HERE = os.path.abspath(__file__)

# ------------------------------------------------------------------------------------------ bookkeeping
_tls = threading.local()
class _IdSet:
    """A weak set by identity (a WeakSet compares tensors with ==, an element-wise op and a host read)."""

    def __init__(self) -> None:
        self.refs: dict[int, weakref.ref] = {}

    def add(self, t: torch.Tensor) -> None:
        i = id(t)

        def gone(r: weakref.ref, i: int = i) -> None:
            if self.refs.get(i) is r:
                del self.refs[i]

        self.refs[i] = weakref.ref(t, gone)

    def discard(self, t: torch.Tensor) -> None:
        r = self.refs.get(id(t))
        if r is not None and r() is t:
            del self.refs[id(t)]

    def __contains__(self, t: torch.Tensor) -> bool:
        r = self.refs.get(id(t))
        return r is not None and r() is t


HOST = _IdSet()  # tensors that live on the host in a GPU run
PINNED = _IdSet()
EVENTS: collections.Counter = collections.Counter()
ACTIVE = False


def _depth() -> int:
    return getattr(_tls, "depth", 0)


class _inside:
    """Marks a Python-level wrapper as running: the aten ops it dispatches are not recorded again."""

    def __enter__(self) -> None:
        _tls.depth = _depth() + 1

    def __exit__(self, *a: Any) -> None:
        _tls.depth = _depth() - 1


def _site() -> tuple[str, str] | None:
    """(innermost client/ frame, outer client/ frames) of the current call; None inside triton's interpreter."""
    f = sys._getframe(2)
    inner = None
    chain = []
    while f is not None:
        fn = f.f_code.co_filename
        if f"{os.sep}triton{os.sep}" in fn:
            return None
        if fn.startswith(PROJ):
            rel = os.path.relpath(fn, ROOT)
            where = f"{rel}:{f.f_lineno} {f.f_code.co_name}"
            if inner is None:
                inner = where
            elif len(chain) < 2:
                chain.append(f"{os.path.basename(fn)}:{f.f_lineno}")
        f = f.f_back
    return (inner or "<outside client/>", " < ".join(chain))


def record(kind: str, sync: bool) -> None:
    if not ACTIVE:
        return
    s = _site()
    if s is None:
        return
    EVENTS[(s[0], kind, "SYNC" if sync else "host", s[1])] += 1


def is_host(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t in HOST


def mark_host(out: Any) -> Any:
    for t in tree_leaves(out):
        if isinstance(t, torch.Tensor):
            HOST.add(t)
    return out


# ---------------------------------------------------------------------------- python-level wrappers
def _wrap_read(name: str) -> None:
    orig = getattr(torch.Tensor, name)

    @functools.wraps(orig)
    def wrapper(self: torch.Tensor, *a: Any, **k: Any) -> Any:
        if ACTIVE and _depth() == 0:
            # a 0-d CPU scalar or a host tensor is no sync; a device tensor's read is
            record(f".{name}()" if not name.startswith("__") else f"{name.strip('_')}(t)", not is_host(self))
        with _inside():
            out = orig(self, *a, **k)
            if out is self:  # .cpu() of a CPU tensor returns it; on a GPU it is a new host tensor
                out = self.clone()
        if name == "cpu" and isinstance(out, torch.Tensor):
            HOST.add(out)
        return out

    setattr(torch.Tensor, name, wrapper)


for _n in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy"):
    _wrap_read(_n)

_orig_to = torch.Tensor.to


def _target_device(a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    if "device" in k:
        return k["device"]
    for x in a:
        if isinstance(x, (torch.device, str)):
            return x
        if isinstance(x, torch.Tensor):
            return x.device
    return None


@functools.wraps(_orig_to)
def _to(self: torch.Tensor, *a: Any, **k: Any) -> Any:
    dev = _target_device(a, k)
    if ACTIVE and _depth() == 0 and dev is not None:
        host_target = isinstance(dev, str) and dev == "cpu"  # an explicit move to the host
        if is_host(self) and not host_target:
            nb = bool(k.get("non_blocking", False))
            if nb and self in PINNED:
                record("H2D pinned non_blocking", False)
            else:
                record("H2D .to(device)" + (" non_blocking unpinned" if nb else ""), True)
        elif not is_host(self) and host_target:
            record("D2H .to('cpu')", True)
    with _inside():
        out = _orig_to(self, *a, **k)
        host_target = isinstance(dev, str) and dev == "cpu"
        if dev is not None and out is self and is_host(self) != host_target:
            out = self.clone()  # a move between host and device: a new tensor on a GPU
    if dev is not None:
        if isinstance(dev, str) and dev == "cpu":
            HOST.add(out)
        else:
            HOST.discard(out)
    elif is_host(self):
        HOST.add(out)
    return out


torch.Tensor.to = _to  # type: ignore[method-assign]

_orig_pin = torch.Tensor.pin_memory


def _pin(self: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:  # no CUDA here: a pinned copy = a host copy
    out = self.clone()
    HOST.add(out)
    PINNED.add(out)
    return out


torch.Tensor.pin_memory = _pin  # type: ignore[method-assign]


def _wrap_factory(name: str) -> None:
    orig = getattr(torch, name)

    @functools.wraps(orig)
    def wrapper(*a: Any, **k: Any) -> Any:
        dev = k.get("device")
        gen = k.get("generator")
        like = any(isinstance(x, torch.Tensor) for x in a[:1])  # torch.as_tensor(t) / torch.tensor(t)
        with _inside():
            out = orig(*a, **k)
        if not ACTIVE:
            return out
        if dev is None and not (gen is not None and gen.device.type != "cpu"):
            if like and name in ("as_tensor",) and not is_host(a[0]):
                return out  # as_tensor of a device tensor stays on it
            mark_host(out)
        elif name in ("tensor", "as_tensor") and _depth() == 0:
            if not (like and not is_host(a[0])):
                record(f"H2D torch.{name}(..., device=)", True)
        return out

    setattr(torch, name, wrapper)


for _n in ("tensor", "as_tensor", "arange", "zeros", "ones", "empty", "full", "randn", "rand", "randint",
           "linspace", "eye", "from_numpy", "randperm"):
    _wrap_factory(_n)

# is_cuda: True for device tensors where quant.py / refresh.py / lowrank.py branch on it (their CUDA branches)
_orig_is_cuda = torch.Tensor.is_cuda
_CUDA_FILES = tuple(os.path.join(PROJ, "compression", f) for f in ("quant.py", "refresh.py", "lowrank.py"))


def _is_cuda(self: torch.Tensor) -> bool:
    if sys._getframe(1).f_code.co_filename in _CUDA_FILES and not is_host(self):
        return True
    return _orig_is_cuda.__get__(self)


torch.Tensor.is_cuda = property(_is_cuda)  # type: ignore[assignment,method-assign]


# --------------------------------------------------------------------------------------- dispatch mode
_A = torch.ops.aten
DYN_SHAPE = {_A.nonzero.default: "nonzero", _A.masked_select.default: "masked_select",
             _A._unique2.default: "unique", _A.unique_dim.default: "unique", _A.unique_consecutive.default:
             "unique", _A.nonzero_static.default: None}  # fmt: skip
LINALG_CHECK = {  # ops whose CUDA kernel checks `info` on the host (a sync) unless called as *_ex
    _A._linalg_check_errors.default: "linalg info check",
    _A._linalg_eigh.default: "linalg eigh (info check)",
    _A._linalg_svd.default: "linalg svd (info check)",
    _A.linalg_eig.default: "linalg eig",
    _A._linalg_slogdet.default: "linalg slogdet",
    _A.linalg_lstsq.default: "linalg lstsq",
}
SCALAR_READ = {_A._local_scalar_dense.default, _A.equal.default, _A.is_nonzero.default}


class Tracker(TorchDispatchMode):
    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        leaves = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        host_in = [t for t in leaves if is_host(t)]
        # 0-d tensors of another device are plain scalars to an op (Python numbers arrive as 0-d CPU tensors)
        dev_in = [t for t in leaves if not is_host(t) and t.dim() > 0]
        if ACTIVE and _depth() == 0:
            on_host = bool(host_in) and not dev_in
            if func in SCALAR_READ:
                record(f"aten.{func.__name__.split('.')[0]}", not on_host)
            elif func in DYN_SHAPE and DYN_SHAPE[func]:
                record(f"data-dependent shape: {DYN_SHAPE[func]}", not on_host)
            elif func is _A.repeat_interleave.Tensor and kwargs.get("output_size") is None and (
                len(args) < 2 or args[-1] is None) and "output_size" not in kwargs:  # fmt: skip
                record("repeat_interleave w/o output_size", not on_host)
            elif func is _A.index.Tensor and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]
            ):
                record("bool-mask indexing", not on_host)
            elif func in LINALG_CHECK:
                record(LINALG_CHECK[func], not on_host)
            elif func is _A.copy_.default:
                dst, src = args[0], args[1]
                if is_host(src) and not is_host(dst) and src.dim() > 0:
                    record("H2D copy_ (blocking)" if not kwargs.get("non_blocking") else "H2D copy_ nb", True)
                elif is_host(dst) and not is_host(src):
                    record("D2H copy_", True)
            elif host_in and dev_in and func not in (_A._to_copy.default,):
                big = [t for t in host_in if t.dim() > 0]
                if big:  # a host tensor (not a 0-d scalar) meets a device one: an implicit copy / an error
                    record(f"mixed host/device op aten.{func.__name__}", True)
        out = func(*args, **kwargs)
        # propagation: results of ops on host tensors stay on the host (not copies into a device tensor)
        if host_in and not dev_in and func not in (_A.copy_.default,):
            mark_host(out)
        elif func is _A.copy_.default and is_host(args[0]):
            pass
        return out


# ---------------------------------------------------------------------------------------------- bench
def params_with_grads(layers: int, embd: int, heads: int, vocab: int, block: int) -> list[torch.nn.Parameter]:
    """The GPU bench's `model_with_gradients` (benchmarks/gpu.py) at a CPU size: a ByteGPT (tied
    embeddings), seeded random gradients (std 1e-3) on every trainable parameter."""
    from envs.models import ByteGPT, GPTConfig

    torch.manual_seed(0)
    model = ByteGPT(GPTConfig(vocab_size=vocab, n_layer=layers, n_head=heads, n_embd=embd, block_size=block))
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(0)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    return params


def run_change(
    params: list[torch.nn.Parameter], a: str, b: str, count: bool, steps: int = 2
) -> dict[str, collections.Counter]:
    global ACTIVE
    from client.compression import MangoAdamW
    from client.protocol import CompressionSetting

    from client.compression import fused, lowrank, refresh

    def upload(t: torch.Tensor, device: torch.device) -> torch.Tensor:  # transfer.upload's CUDA branch
        return t.pin_memory().to(device, non_blocking=True) if is_host(t) else t.to(device)

    for mod in (fused, lowrank, refresh):
        mod.upload = upload  # type: ignore[attr-defined]
    opt = MangoAdamW(params, lr=1e-4, setting=CompressionSetting.parse(a), fused=True)
    opt.batch_convert = True  # the GPU's batched conversion (convert.py), as p.is_cuda picks there
    opt.graph_refresh = False  # no CUDA graph on a CPU
    for _ in range(steps):
        opt.step()
    out = {}
    for phase, fn in (("apply_setting", lambda: opt.apply_setting(CompressionSetting.parse(b))),
                      ("first step", opt.step), ("second step", opt.step)):  # fmt: skip
        EVENTS.clear()
        ACTIVE = count
        try:
            with Tracker():
                fn()
        finally:
            ACTIVE = False
        out[phase] = collections.Counter(EVENTS)
    return out


def table(title: str, ev: collections.Counter) -> None:
    syncs = sum(n for (_, _, s, _), n in ev.items() if s == "SYNC")
    print(f"\n## {title}: {syncs} syncs on CUDA ({sum(ev.values())} host reads/transfers in all)")
    if not ev:
        return
    w = max(len(k[0]) for k in ev)
    k_w = max(len(k[1]) for k in ev)
    print(f"{'call site':<{w}}  {'kind':<{k_w}}  {'':4}  {'n':>3}  via")
    for (site, kind, s, via), n in sorted(ev.items(), key=lambda kv: (kv[0][2] != "SYNC", kv[0][0], kv[0][1])):
        print(f"{site:<{w}}  {kind:<{k_w}}  {s:4}  {n:>3}  {via}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embd", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2, help="steps at the old setting before the change")
    ap.add_argument("--changes", default="r0/b8/g0>r4/b8/g0,r0/b8/g0>r16/b3/g0.75,r4/b8/g0>r64/b16/g0,"
                    "r4/b8/g0>r0/b8/g0")  # fmt: skip
    ap.add_argument("--cold", action="store_true", help="count the first (cold-cache) pass instead")
    args = ap.parse_args()
    params = params_with_grads(args.layers, args.embd, args.heads, args.vocab, args.block)
    shapes = collections.Counter(tuple(p.shape) for p in params if p.ndim == 2)
    print(f"model: {args.layers} layers, width {args.embd}, vocab {args.vocab}, block {args.block}; "
          f"matrices {dict(shapes)}", flush=True)  # fmt: skip
    changes = [tuple(c.split(">")) for c in args.changes.split(",")]
    for a, b in changes:
        if not args.cold:  # as the GPU bench: a first untimed pass fills every cache (nudges, tables, kernels)
            run_change(params, a, b, count=False, steps=1)
        res = run_change(params, a, b, count=True, steps=args.steps)
        for phase, ev in res.items():
            table(f"{a} -> {b}: {phase}", ev)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
