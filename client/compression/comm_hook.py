"""The compression core as a ``DistributedDataParallel`` communication hook (communication is the point).

Per bucket and step, on every rank ``i`` of ``W``::

    u_i   = g_i + e_i - gamma * h            # innovation against the shared reference h
    s_i   = C(u_i)                           # what rank i contributes (its decoded message)
    g_hat = gamma * h + mean_i(s_i)          # what DDP writes into every rank's .grad (identical)
    e_i  <- beta * e_i + (1 - gamma) * (g_i - gamma * h - s_i)   # error feedback (shift_compress)
    h    <- g_hat                            # identical on every rank: it is built from all-reduced values

``C`` is collective (it runs the all-reduces); the :class:`~client.protocol.CompressionSetting` chooses it:

* ``rank > 0``: PowerSGD-style factors per weight matrix of the bucket (``view(shape[0], -1)``, m x n):
  ``P_i = U_i Q`` (Q: the warm start, identical on all ranks), all-reduce ``P``, ``P^ = orth(mean P)``,
  ``Q_i = U_i^T P^``, all-reduce ``Q``; ``s_i = P^ Q_i^T``, ``mean_i s_i = P^ (mean Q)^T``. Both factors are
  quantized to ``bits`` before their all-reduce. 1-D tensors and matrices too small to gain (PowerSGD's
  ``min_compression_rate`` test) are all-reduced uncompressed in fp32.
* ``rank == 0``: the whole flat bucket is quantized to ``bits`` and all-reduced.
* ``bits``: 32 sends fp32 (no quantization); 16 sends bf16 (the all-reduce sums in bf16, a rounding that
  error feedback does not see); 2/3/4/8 use the **shared-scale integer code** below.

Shared-scale integer code (how quantized values stay all-reduce-able)
----------------------------------------------------------------------
Values are cut into blocks (``block``, default 64 at <= 4 bits, 256 at 8 bits). One all-reduce(MAX) of the
per-block absmax gives a scale ``s`` that every rank shares; each rank then codes ``x`` with the uniform code
of ``quant.py`` (``c = floor((x/s + 1)/2 * L + u)``, ``L = 2^b - 1``, ``u ~ U[0, 1)`` stochastic, unbiased),
and the codes are **summed exactly as integers**: ``f = bitlen(W * L)`` bits per field, ``63 // f`` fields per
int64 word (headroom so that the sum of W codes never carries into the next field), one all-reduce(SUM) of
the words. The sum decodes to ``mean_i s_i = (2 C / L - W) s / W`` exactly, on every rank alike.

Bytes handed to the collectives per quantized value (this is what ``stats()['comm_bytes']`` counts, per rank
and step): ``8 / (63 // f)`` for the codes plus ``4 / block`` for the shared scale, e.g. for ``W = 2``:

====  ====  ==============  ==========================
bits  f     fields / int64  bits per value (block)
====  ====  ==============  ==========================
2     3     21              3.05 + 0.50 (64)  = 3.55
3     4     15              4.27 + 0.50 (64)  = 4.77
4     5     12              5.33 + 0.50 (64)  = 5.83
8     9     7               9.14 + 0.125 (256) = 9.27
====  ====  ==============  ==========================

The headroom grows with ``log2 W`` (``W = 8``: 2 bits -> 5-bit fields, 5.33 + 0.5 bits per value). A ring
all-reduce sends ``2 (W - 1) / W`` times the payload per rank (``stats()['comm_wire_bytes']``). The
alternative, all-gathering each rank's packed codes and own scales (``b + 32 / block`` bits per value, no
headroom) and decoding the sum locally, sends ``(W - 1)`` times its payload per rank. Bits sent per value and
rank, shared scale vs all-gather: ``W = 2``, 2 bits: 3.55 vs 2.50; 4 bits: 5.83 vs 4.50 (all-gather is
cheaper by the headroom); ``W = 4``, 2 bits: 7.15 vs 7.50; 4 bits: 10.35 vs 13.50; ``W = 8``, 4 bits: 13.32
vs 31.5. The all-gather grows linearly with ``W`` (and decodes ``W`` messages per rank), so the hook uses
the shared scale: it costs about one extra bit per value at ``W = 2`` and wins from ``W = 4`` on.

Keeping ranks identical: the setting must change on every rank at the same step. Rank 0 (or whoever
decides) calls :func:`broadcast_setting` and every rank applies the result with
:meth:`MangoHookState.apply_setting`. Everything else that must agree (``h``, the warm-start ``Q``, the
orthogonal bases) is computed from all-reduced values by the same deterministic operations on every rank.
"""

# No `from __future__ import annotations`: DDP checks the hook's annotations against the real classes.
import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from client.compression.codes import QUANT_BITS, default_block
from client.compression.feedback import shift_compress
from client.compression.lowrank import init_q, orthonormalize_batched
from client.protocol import CompressionSetting

__all__ = ["MangoHookState", "broadcast_setting", "mango_comm_hook"]

logger = logging.getLogger(__name__)

_FORMAT = "mango-comm-hook-v1"
#: Bits of an int64 word that carry code fields (the sign bit stays clear so the SUM never overflows).
_WORD_BITS = 63


@dataclass
class _Layout:
    """Where each parameter of one bucket lives in its flat buffer."""

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    numels: tuple[int, ...]

    @property
    def numel(self) -> int:
        return sum(self.numels)


@dataclass
class _BucketState:
    """Per-bucket buffers (flat, float32, on the bucket's device); ``None`` means all zeros."""

    layout: _Layout
    e: torch.Tensor | None = None  # error-feedback residual of this rank
    h: torch.Tensor | None = None  # gamma-shift reference, identical on all ranks


@dataclass
class _StepStats:
    payload_bytes: int = 0
    wire_bytes: float = 0.0
    dense_bytes: int = 0
    time_s: float = 0.0
    events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = field(default_factory=list)
    err_num: torch.Tensor | None = None
    err_den: torch.Tensor | None = None
    nonfinite: torch.Tensor | None = None  # 0-d bool on the device: some rank's bucket held NaN/inf
    # Held until the step's last bucket, then committed or rolled back together (see _finish_step):
    buffers: list[torch.Tensor] = field(default_factory=list)  # the aggregated buckets handed back to DDP
    commits: list[tuple[Any, ...]] = field(default_factory=list)  # (bucket state, e_old, e_new, h_old, h_new)
    q_commits: list[tuple[str, torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (key, old, new)


def _orthonormalize_all(mats: list[torch.Tensor]) -> list[torch.Tensor]:
    """:func:`~client.compression.lowrank.orthonormalize_batched` of several (B_i, m_i, r) stacks in one call
    per ``r``, each result in its input's dtype.

    Rows are zero-padded to the largest ``m_i`` and the call is told each matrix's own rows (the nudge and
    fallback stay in them; zero rows change neither the Gram matrix nor the other rows), so each result is
    that of its own stack, at one launch sequence per bucket instead of one per shape.
    """
    out: list[torch.Tensor | None] = [None] * len(mats)
    by_r: dict[int, list[int]] = defaultdict(list)
    for i, x in enumerate(mats):
        by_r[x.shape[-1]].append(i)
    for r, idx in by_r.items():
        if len(idx) == 1:
            out[idx[0]] = orthonormalize_batched(mats[idx[0]]).to(mats[idx[0]].dtype)
            continue
        rows = max(mats[i].shape[1] for i in idx)
        total = sum(mats[i].shape[0] for i in idx)
        pad = mats[idx[0]].new_zeros(total, rows, r)  # (sum B_i, max m_i, r)
        pos = 0
        for i in idx:
            b, m, _ = mats[i].shape
            pad[pos : pos + b, :m] = mats[i]
            pos += b
        own = [mats[i].shape[1] for i in idx for _ in range(mats[i].shape[0])]
        done = orthonormalize_batched(pad, rows=own).to(pad.dtype)
        pos = 0
        for i in idx:
            b, m, _ = mats[i].shape
            out[i] = done[pos : pos + b, :m]
            pos += b
    return [t for t in out if t is not None]


def _group_size(group: dist.ProcessGroup | None) -> int:
    return dist.get_world_size(group)


class MangoHookState:
    r"""State of :func:`mango_comm_hook`: knobs, per-bucket buffers and communication statistics.

    Register it like PowerSGD's state::

        state = MangoHookState(setting=CompressionSetting(rank=4, bits=4, gamma=0.0), module=model)
        ddp_model.register_comm_hook(state, mango_comm_hook)

    **Tuning guide.** The knobs that matter are the three of the setting; the policy service (or a controller)
    changes them between steps, identically on every rank (:func:`broadcast_setting`).

    1. ``setting.rank`` (``0`` = no low-rank): bytes per m x n matrix drop from ``m n`` values to
       ``r (m + n)``. Start at 1-4 and double until the loss matches the uncompressed run (PowerSGD's advice
       holds: 1-4 suffices for most vision models, LMs may want 8-32). ``rank=0`` quantizes every value.
    2. ``setting.bits`` (2, 3, 4, 8, 16, 32): the width of the transmitted codes. Each bit fewer doubles the
       rounding step (4x its mean square). Sweep 8 -> 4 -> 2 at a fixed rank. On the GPT-2-small benchmark
       (BENCHMARKS.md, one seed, 200 steps) 8 and 4 bits cost little on top of the rank, 2-bit *factors*
       (``rank > 0``) lost badly, 2-bit full buckets (``rank = 0``, error feedback on) did not. The real cost
       per value is in the module docstring (headroom + shared scale).
    3. ``setting.gamma`` in [0, 1]: the shift. Compress only the innovation against the last all-reduced
       gradient ``h``; worth it when consecutive gradients are alike (large batches, late training), useless
       or harmful early on. Switching it from 0 on starts from ``h = 0`` (one plain step); switching it to 0
       frees ``h``.

    Example (the setting changes between steps, decided on rank 0)::

        state = MangoHookState(setting=CompressionSetting(rank=4, bits=8, gamma=0.0), module=model)
        ddp.register_comm_hook(state, mango_comm_hook)
        for step, batch in enumerate(loader):
            loss_fn(ddp(batch)).backward()
            opt.step()
            opt.zero_grad()
            if step % 50 == 49:  # every rank reaches this point
                decided = controller.decide(...) if dist.get_rank() == 0 else None
                state.apply_setting(broadcast_setting(decided, src=0))
            record = TelemetryRecord(..., **state.telemetry())  # comm_bytes, comm_time_s

    Knobs that are seldom changed:

    :param process_group: the group to all-reduce over (``None``: the default group).
    :param setting: the initial setting (default: off, i.e. exactly DDP's plain all-reduce mean).
    :param module: the model (plain or DDP-wrapped). Strongly recommended: buffers are then keyed by
        parameter name, so they survive DDP's bucket rebuild after the first iteration and a resume with a
        different bucket layout. Without it they are keyed by bucket position; a layout change resets them.
    :param error_feedback: keep the residual ``e`` and add it back next step (default on). Off makes the
        compressor biased (low rank) or noisy (quantization) with nothing to correct it: keep it on unless you
        measure otherwise.
    :param ef_beta: decay of the old residual in [0, 1]; 1 (default) loses nothing at ``gamma = 0``
        (``sent + e_new == g + e``), below 1 forgets stale error geometrically. With ``gamma > 0`` the
        residual enters scaled by ``1 - gamma`` and the reference ``h`` carries the rest (EF21 at
        ``gamma = 1``; ``feedback.shift_compress``: without the factor the residual is fed back twice).
    :param min_compression_rate: a matrix is factored only if ``m n > rate * r (m + n)`` (PowerSGD's test;
        default 2); others travel uncompressed.
    :param block: values per shared scale for the integer code (``None``: 64 at <= 4 bits, 256 at 8). Smaller
        blocks isolate outliers at ``32 / block`` extra bits per value.
    :param stochastic: stochastic rounding (unbiased; default) or round-to-nearest.
    :param start_iter: plain all-reduce (any setting) for the first ``start_iter`` steps (PowerSGD's
        ``start_powerSGD_iter``): early training is sensitive to gradient error.
    :param seed: seeds the warm-start ``Q`` draws (identical on all ranks) and, with the rank, the rounding
        noise.

    Statistics (:meth:`stats`, :meth:`telemetry`): bytes handed to the collectives in the last completed step
    (per rank), the wall time of the hook's collectives (CUDA events on GPU; it includes waiting for the
    slowest rank, and on a launch-bound host the time to enqueue them), the relative compression error
    ``||u - s||^2 / ||u||^2`` on this rank. A step ends when DDP hands over its last bucket.

    Cost: the hook is launch-bound on fast GPUs (many small kernels per bucket); on 2 H200s over NVLink a
    GPT-2-small step took ~100 ms with ``rank=4`` against ~80 ms for PowerSGD and ~35 ms uncompressed, while
    ``rank=0`` (quantized buckets) took ~50 ms (BENCHMARKS.md). Compression pays where links are slow
    (PCIe, Ethernet, many nodes), not on one NVLink host. Larger DDP buckets (``bucket_cap_mb``) mean fewer
    launches.

    Non-finite gradients: a NaN or inf in any rank's bucket is agreed on by one 4-byte all-reduce (MAX) per
    compressed bucket (the plain path needs none: its sum already carries it), and the whole step is skipped
    on every rank: every bucket comes back NaN (MangoAdamW skips NaN tensors; with another optimizer test
    :attr:`last_step_nonfinite` before ``optimizer.step()``, as with ``torch.amp.GradScaler``), and the
    residuals, references and warm starts keep the values the step started from, so training continues as
    if the step had not happened. :attr:`nonfinite_steps` (and ``stats()``) counts them. No host sync.

    Checkpoints: :meth:`state_dict` / :meth:`load_state_dict` carry the setting, step count, residuals,
    references, warm starts and both RNG states. The residual differs per rank: save one file per rank and
    load each rank's own.

    .. warning::
        Every rank must apply the same setting at the same step; a mismatch makes the ranks issue different
        collectives and hang. Apply settings only between steps (after ``optimizer.step()``).
    """

    def __init__(
        self,
        process_group: dist.ProcessGroup | None = None,
        setting: CompressionSetting | None = None,
        *,
        module: nn.Module | None = None,
        error_feedback: bool = True,
        ef_beta: float = 1.0,
        min_compression_rate: float = 2.0,
        block: int | None = None,
        stochastic: bool = True,
        start_iter: int = 0,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= ef_beta <= 1.0:
            raise ValueError(f"ef_beta={ef_beta} must lie in [0, 1] (1 = classic error feedback)")
        if min_compression_rate <= 0:
            raise ValueError(f"min_compression_rate={min_compression_rate} must be > 0 (PowerSGD uses 2)")
        if block is not None and block < 1:
            raise ValueError(f"block={block} must be a positive int (or None for the default per width)")
        if start_iter < 0:
            raise ValueError(f"start_iter={start_iter} must be >= 0")
        # --- the process group
        self.process_group = process_group
        # --- knobs that are tuned (the policy's action)
        self._setting = setting if setting is not None else CompressionSetting.off()
        self._check_setting(self._setting)
        # --- knobs that are seldom tuned
        self.error_feedback = error_feedback
        self.ef_beta = float(ef_beta)
        self.min_compression_rate = float(min_compression_rate)
        self.block = block
        self.stochastic = stochastic
        self.start_iter = int(start_iter)
        self.seed = int(seed)
        # --- internal state
        self._names: dict[int, str] = {}
        if module is not None:
            inner = module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
            self._names = {id(p): name for name, p in inner.named_parameters()}
        self._use_names = module is not None
        self._buckets: dict[int, _BucketState] = {}
        # Per-parameter pieces of e / h waiting for a bucket (after a layout change or a load).
        self._orphans: dict[str, dict[str, torch.Tensor]] = {}
        self._q: dict[str, torch.Tensor] = {}  # warm-start Q per parameter (n x r), identical on all ranks
        self._shared_gen = torch.Generator().manual_seed(self.seed)  # CPU, identical across ranks
        self._round_gen: torch.Generator | None = None  # per rank, created on the bucket's device
        self._round_gen_state: torch.Tensor | None = None  # pending state from load_state_dict
        self.iter = 0  # steps completed (DDP handed over its last bucket)
        # --- statistics
        self._cur = _StepStats()
        self._pending: list[_StepStats] = []  # finished steps whose CUDA events are not resolved yet
        self._last: dict[str, float] = {}
        self.total_comm_bytes = 0
        self.total_comm_time_s = 0.0
        self.setting_changes = 0
        self.layout_changes = 0
        self._nonfinite_steps: torch.Tensor | None = None  # device counter: no host sync per step
        self._last_nonfinite: torch.Tensor | None = None

    # ------------------------------------------------------------------------------------------ setting
    @staticmethod
    def _check_setting(setting: CompressionSetting) -> None:
        if not isinstance(setting, CompressionSetting):
            raise TypeError(f"setting must be a CompressionSetting, got {type(setting).__name__}")

    @property
    def setting(self) -> CompressionSetting:
        """The setting in force."""
        return self._setting

    def apply_setting(self, setting: CompressionSetting) -> None:
        """Switch to ``setting`` from the next step on; call it on every rank with the same value.

        Residuals and references stay (they live in gradient space); warm starts are truncated or extended
        with fresh random columns when the rank changes; ``h`` is freed when gamma becomes 0.
        """
        self._check_setting(setting)
        if setting == self._setting:
            return
        logger.info("hook setting %s -> %s at step %d", self._setting.label(), setting.label(), self.iter)
        if setting.gamma == 0.0:
            for bs in self._buckets.values():
                bs.h = None
            for piece in self._orphans.values():
                piece.pop("h", None)
        self._setting = setting
        self.setting_changes += 1

    # ------------------------------------------------------------------------------------------- layout
    def _layout(self, bucket: dist.GradBucket) -> _Layout:
        params = bucket.parameters()
        keys = []
        for j, p in enumerate(params):
            name = self._names.get(id(p)) if self._use_names else None
            keys.append(name if name is not None else f"bucket{bucket.index()}.{j}")
        shapes = tuple(tuple(p.shape) for p in params)
        numels = tuple(p.numel() for p in params)
        offsets = tuple(sum(numels[:j]) for j in range(len(numels)))
        return _Layout(tuple(keys), shapes, offsets, numels)

    def _bucket_pieces(self) -> Iterator[tuple[str, str, torch.Tensor]]:
        """``(parameter key, buffer name, that parameter's slice of the bucket buffer)`` for every live
        ``e`` / ``h`` bucket buffer (views, not copies)."""
        for bs in self._buckets.values():
            for name in ("e", "h"):
                t = getattr(bs, name)
                if t is None:
                    continue
                for key, off, n in zip(bs.layout.keys, bs.layout.offsets, bs.layout.numels):
                    yield key, name, t[off : off + n]

    def _dissolve(self) -> None:
        """Move every bucket's buffers into per-parameter pieces (the layout changed)."""
        for key, name, piece in self._bucket_pieces():
            self._orphans.setdefault(key, {})[name] = piece.clone()
        self._buckets.clear()

    def _bucket_state(self, bucket: dist.GradBucket, device: torch.device) -> _BucketState:
        layout = self._layout(bucket)
        if layout.numel != bucket.buffer().numel():
            raise RuntimeError(
                f"bucket {bucket.index()} holds {bucket.buffer().numel()} values but its parameters "
                f"{layout.numel}; the hook needs the flat layout DDP uses for dense gradients"
            )
        bs = self._buckets.get(bucket.index())
        if bs is not None and bs.layout.keys == layout.keys and bs.layout.shapes == layout.shapes:
            return bs
        wanted = set(layout.keys)
        if bs is not None or any(wanted.intersection(b.layout.keys) for b in self._buckets.values()):
            self.layout_changes += 1
            logger.info("DDP bucket layout changed at step %d: re-mapping buffers per parameter", self.iter)
            self._dissolve()
        bs = _BucketState(layout)
        for name in ("e", "h"):
            pieces = [self._orphans.get(k, {}).get(name) for k in layout.keys]
            if any(p is not None for p in pieces):
                flat = [
                    p.to(device=device, dtype=torch.float32).reshape(-1)
                    if p is not None
                    else torch.zeros(n, device=device)
                    for p, n in zip(pieces, layout.numels)
                ]
                setattr(bs, name, torch.cat(flat))
        for k in layout.keys:
            self._orphans.pop(k, None)
        self._buckets[bucket.index()] = bs
        return bs

    # -------------------------------------------------------------------------------------- collectives
    def _world(self) -> int:
        return _group_size(self.process_group)

    def _all_reduce(self, t: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> None:
        """In-place all-reduce, counted (bytes) and timed (CUDA events on GPU, wall clock on CPU)."""
        w = self._world()
        nbytes = t.numel() * t.element_size()
        self._cur.payload_bytes += nbytes
        self._cur.wire_bytes += nbytes * 2.0 * (w - 1) / w
        if t.is_cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dist.all_reduce(t, op=op, group=self.process_group)
            end.record()
            self._cur.events.append((start, end))
        else:
            t0 = time.perf_counter()
            dist.all_reduce(t, op=op, group=self.process_group)
            self._cur.time_s += time.perf_counter() - t0

    def _rounding_generator(self, device: torch.device) -> torch.Generator:
        if self._round_gen is None or self._round_gen.device != device:
            rank = dist.get_rank(self.process_group) if dist.is_initialized() else 0
            gen = torch.Generator(device=device)
            gen.manual_seed(self.seed * 1_000_003 + 7919 * (rank + 1))
            if self._round_gen_state is not None:
                gen.set_state(self._round_gen_state)
                self._round_gen_state = None
            self._round_gen = gen
        return self._round_gen

    def _send(self, x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
        """All-reduce the flat float32 ``x`` at ``bits``: ``(s, mean)``, this rank's decoded message and the
        mean of all ranks' messages (identical on every rank)."""
        w = self._world()
        if x.numel() == 0:
            return x, x.clone()
        if bits == 32:
            buf = x * (1.0 / w)
            self._all_reduce(buf)
            return x, buf
        if bits == 16:
            xb = x.to(torch.bfloat16)
            sent = xb.float()
            self._all_reduce(xb)
            return sent, xb.float() / w
        if bits not in QUANT_BITS:
            raise ValueError(f"bits={bits} is not a width the hook sends; choose one of 2, 3, 4, 8, 16, 32")
        top = (1 << bits) - 1
        block = self.block or default_block(bits)
        n = x.numel()
        nb = -(-n // block)
        xb = F.pad(x, (0, nb * block - n)).view(nb, block)  # (nb, block)
        scale = xb.abs().amax(dim=1)  # (nb,)
        self._all_reduce(scale, dist.ReduceOp.MAX)  # the shared scale
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        t = (torch.clamp(xb / safe[:, None], -1.0, 1.0) + 1.0) / 2.0 * float(top)
        if self.stochastic:
            gen = self._rounding_generator(x.device)
            u: torch.Tensor | float = torch.rand(t.shape, generator=gen, device=x.device)
        else:
            u = 0.5
        codes = torch.floor(t + u).clamp_(0.0, float(top))  # (nb, block), integers in [0, L]
        sent = ((codes / top * 2.0 - 1.0) * scale[:, None]).view(-1)[:n]
        # Pack with headroom: the sum of w codes fits its field, so SUM over int64 words is exact per field.
        width = (w * top).bit_length()
        per = _WORD_BITS // width
        c = codes.view(-1).to(torch.int64)
        c = F.pad(c, (0, (-c.numel()) % per)).view(-1, per)  # (words, per)
        shifts = torch.arange(per, device=x.device, dtype=torch.int64) * width
        words = (c << shifts).sum(dim=1)  # disjoint fields: sum == OR
        self._all_reduce(words)
        sums = ((words[:, None] >> shifts) & ((1 << width) - 1)).view(-1)[: nb * block]
        mean = (sums.view(nb, block).float() / top * 2.0 - w) * (scale / w)[:, None]
        return sent, mean.view(-1)[:n]

    # -------------------------------------------------------------------------------------- compressors
    def _warm_q(self, key: str, n: int, r: int, device: torch.device) -> torch.Tensor:
        q = self._q.get(key)
        if q is None or q.shape[0] != n:
            q = init_q(n, r, self._shared_gen)
        elif q.shape[1] > r:
            q = q[:, :r]
        elif q.shape[1] < r:
            q = torch.cat([q.to("cpu"), init_q(n, r - q.shape[1], self._shared_gen)], dim=1)
        return q.to(device=device, dtype=torch.float32)

    def _compress(self, layout: _Layout, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The collective compressor ``C``: ``(s, mean_i s_i)`` for the flat innovation ``u``.

        The new warm starts are committed by :meth:`_finish_step` (kept as they were if the step is skipped).
        """
        rank, bits = self._setting.rank, self._setting.bits
        if rank == 0:
            return self._send(u, bits)
        plain: list[int] = []
        groups: dict[tuple[int, int, int], list[int]] = defaultdict(list)
        for j, shape in enumerate(layout.shapes):
            if len(shape) >= 2:
                m, n = shape[0], layout.numels[j] // shape[0]
                r = min(rank, m, n)
                if m * n > self.min_compression_rate * r * (m + n):
                    groups[(m, n, r)].append(j)
                    continue
            plain.append(j)
        piece_sent: dict[int, torch.Tensor] = {}  # flat pieces per parameter, joined in layout order
        piece_mean: dict[int, torch.Tensor] = {}
        if plain:
            views = [u[layout.offsets[j] : layout.offsets[j] + layout.numels[j]] for j in plain]
            _, vmean = self._send(torch.cat(views), 32)
            for j, v, vm in zip(plain, views, vmean.split([v.numel() for v in views])):
                piece_sent[j], piece_mean[j] = v, vm
        if groups:
            # Same-shaped matrices are stacked (one bmm per shape); all bases are orthonormalized together.
            mats, warm = [], []
            for (m, n, r), idx in groups.items():
                views = [u[layout.offsets[j] : layout.offsets[j] + m * n].view(m, n) for j in idx]
                mats.append(torch.stack(views))  # (B, m, n)
                warm.append(
                    torch.stack([self._warm_q(layout.keys[j], n, r, u.device) for j in idx])
                )  # (B, n, r)
            qs = _orthonormalize_all(warm)
            ps = [torch.bmm(mat, q) for mat, q in zip(mats, qs)]  # (B, m, r)
            # Factors travel column by column (a column's values share a magnitude: good for block scales).
            _, pmean = self._send(torch.cat([p.transpose(1, 2).reshape(-1) for p in ps]), bits)
            pms = [
                pm.view(p.shape[0], p.shape[2], p.shape[1]).transpose(1, 2)  # (B, m, r)
                for p, pm in zip(ps, pmean.split([p.numel() for p in ps]))
            ]
            phats = _orthonormalize_all(pms)
            qloc = [torch.bmm(mat.transpose(1, 2), ph) for mat, ph in zip(mats, phats)]  # (B, n, r)
            qsent, qmean = self._send(torch.cat([q.transpose(1, 2).reshape(-1) for q in qloc]), bits)
            sizes = [q.numel() for q in qloc]
            for (_, idx), ph, q, qs_f, qm_f, q0 in zip(
                groups.items(), phats, qloc, qsent.split(sizes), qmean.split(sizes), warm
            ):
                bsz, n, r = q.shape
                qm_b = qm_f.view(bsz, r, n)  # (B, r, n) = mean(Q)^T
                s_b = torch.bmm(ph, qs_f.view(bsz, r, n))  # (B, m, n): this rank's message
                m_b = torch.bmm(ph, qm_b)  # (B, m, n): the mean of all ranks' messages
                for b, j in enumerate(idx):
                    piece_sent[j], piece_mean[j] = s_b[b].reshape(-1), m_b[b].reshape(-1)
                    # (n, r) warm start (a view), the same on all ranks; q0 is what this step started from
                    self._cur.q_commits.append((layout.keys[j], q0[b], qm_b[b].T))
        order = range(len(layout.keys))
        return torch.cat([piece_sent[j] for j in order]), torch.cat([piece_mean[j] for j in order])

    # ---------------------------------------------------------------------------------------------- hook
    def _run(self, bucket: dist.GradBucket) -> torch.Tensor:
        buf = bucket.buffer()
        w = self._world()
        self._cur.dense_bytes += buf.numel() * 4
        self._cur.buffers.append(buf)
        bs = self._bucket_state(bucket, buf.device)
        setting = self._setting
        plain = self.iter < self.start_iter or (setting.is_off and bs.e is None)
        if plain:  # exactly DDP's own path: scale by 1/W, then all-reduce(SUM)
            bs.h = None
            buf.mul_(1.0 / w)
            self._all_reduce(buf)
            # The sum is the same on every rank, so every rank reaches the same verdict without a collective.
            self._mark_nonfinite(~torch.isfinite(buf).all())
            return buf
        # One 4-byte all-reduce (MAX) of "this rank's bucket is not finite", so every rank skips the step
        # together and no rank's NaN or inf reaches another rank's residual, reference or warm start.
        flag = (~torch.isfinite(buf).all()).to(torch.float32).reshape(1)
        self._all_reduce(flag, dist.ReduceOp.MAX)
        bad = flag[0] > 0  # 0-d bool, identical on every rank; no host sync (applied with torch.where)
        self._mark_nonfinite(bad)
        g = buf.float().masked_fill(bad, 0.0)  # the collectives below run on finite values either way
        gamma = setting.gamma
        e_old = bs.e
        h = bs.h if gamma > 0.0 else None
        box: dict[str, torch.Tensor] = {}

        def collective(u: torch.Tensor) -> torch.Tensor:
            sent, mean = self._compress(bs.layout, u)
            box["mean"], box["u"], box["sent"] = mean, u, sent
            return sent

        _, e_new, _ = shift_compress(g, e_old, h, gamma, self.ef_beta, collective)
        g_hat = box["mean"] if h is None else box["mean"] + gamma * h
        diff = box["u"] - box["sent"]
        num, den = diff.square().sum().masked_fill(bad, 0.0), box["u"].square().sum().masked_fill(bad, 0.0)
        self._cur.err_num = num if self._cur.err_num is None else self._cur.err_num + num
        self._cur.err_den = den if self._cur.err_den is None else self._cur.err_den + den
        lossless = setting.rank == 0 and setting.bits == 32
        keep_e = self.error_feedback and not lossless
        self._cur.commits.append((bs, e_old, e_new if keep_e else None, h, g_hat if gamma > 0.0 else None))
        buf.copy_(g_hat)
        return buf

    def _mark_nonfinite(self, bad: torch.Tensor) -> None:
        cur = self._cur.nonfinite
        self._cur.nonfinite = bad if cur is None else cur | bad

    def _finish_step(self) -> None:
        """End of the step (DDP handed over its last bucket): commit its buffers, or skip it as a whole.

        When some rank's bucket held NaN or inf, every rank (the verdict is all-reduced) hands DDP NaN for
        every bucket of the step and keeps the residuals, references and warm starts the step started from:
        the step is skipped consistently, as if it had not happened (MangoAdamW skips NaN gradients; with
        another optimizer test :attr:`last_step_nonfinite`). DDP copies the buckets into ``.grad`` after the
        last bucket, so the earlier buckets' buffers can still be rewritten here.
        """
        cur = self._cur
        skip = cur.nonfinite
        live = {id(b) for b in self._buckets.values()}
        for bs, e_old, e_new, h_old, h_new in cur.commits:
            e = _keep_if(skip, e_old, e_new)
            h = _keep_if(skip, h_old, h_new) if h_new is not None else None
            if id(bs) in live:
                bs.e, bs.h = e, h
                continue
            # A later bucket of this step changed the layout and dissolved this one into pieces.
            for key, off, n in zip(bs.layout.keys, bs.layout.offsets, bs.layout.numels):
                piece = self._orphans.setdefault(key, {})
                for name, t in (("e", e), ("h", h)):
                    if t is None:
                        piece.pop(name, None)
                    else:
                        piece[name] = t[off : off + n].clone()
        for key, q_old, q_new in cur.q_commits:
            self._q[key] = q_new if skip is None else torch.where(skip, q_old, q_new)
        if skip is not None:
            for buf in cur.buffers:
                buf.masked_fill_(skip, math.nan)
            bad = skip.to(torch.int64)
            self._nonfinite_steps = bad if self._nonfinite_steps is None else self._nonfinite_steps + bad
            self._last_nonfinite = skip
        cur.buffers.clear()
        cur.commits.clear()
        cur.q_commits.clear()
        self.iter += 1
        done, self._cur = cur, _StepStats()
        self._pending.append(done)
        self._resolve(block=False)

    def _resolve(self, block: bool) -> None:
        """Turn finished steps' CUDA events into seconds (without waiting unless ``block``)."""
        while self._pending:
            st = self._pending[0]
            if st.events:
                if not block and not st.events[-1][1].query():
                    return
                st.events[-1][1].synchronize()
                st.time_s += sum(s.elapsed_time(e) for s, e in st.events) / 1000.0
                st.events.clear()
            self._pending.pop(0)
            err = float("nan")
            if st.err_num is not None and st.err_den is not None:
                den = float(st.err_den)
                err = float(st.err_num) / den if den > 0 else 0.0
            self.total_comm_bytes += st.payload_bytes
            self.total_comm_time_s += st.time_s
            self._last = {
                "comm_bytes": float(st.payload_bytes),
                "comm_wire_bytes": st.wire_bytes,
                "dense_bytes": float(st.dense_bytes),
                "comm_time_s": st.time_s,
                "compression_error": err,
            }

    # ------------------------------------------------------------------------------------------ stats
    def stats(self) -> dict[str, float]:
        """Statistics of the last completed step (waits for its CUDA events).

        ``comm_bytes``: bytes handed to the collectives by this rank (payload; what compression controls).
        ``comm_wire_bytes``: what a ring all-reduce sends per rank, ``2 (W - 1) / W * payload``.
        ``dense_bytes``: what plain fp32 DDP would hand over (4 bytes per gradient value).
        ``compression_ratio``: ``dense_bytes / comm_bytes``. ``comm_time_s``: wall time of the collectives.
        ``compression_error``: ``||u - s||^2 / ||u||^2`` over this rank's compressed buckets (NaN if none).
        Totals over all steps: ``total_comm_bytes``, ``total_comm_time_s``.
        """
        self._resolve(block=True)
        out = dict(self._last) if self._last else {"comm_bytes": 0.0, "comm_time_s": 0.0}
        if out.get("comm_bytes"):
            out["compression_ratio"] = out.get("dense_bytes", 0.0) / out["comm_bytes"]
        out.update(
            steps=float(self.iter),
            total_comm_bytes=float(self.total_comm_bytes),
            total_comm_time_s=self.total_comm_time_s,
            setting_changes=float(self.setting_changes),
            layout_changes=float(self.layout_changes),
            nonfinite_steps=float(self.nonfinite_steps),
        )
        return out

    @property
    def nonfinite_steps(self) -> int:
        """Steps in which a bucket held NaN/inf on some rank and was skipped on every rank (one host sync)."""
        return int(self._nonfinite_steps) if self._nonfinite_steps is not None else 0

    @property
    def last_step_nonfinite(self) -> bool:
        """Whether the last completed step skipped a bucket (the same answer on every rank; one host sync).

        The skipped buckets' gradients are NaN, which MangoAdamW skips tensor by tensor. To skip the whole
        step, as ``torch.amp.GradScaler`` does, test this before ``optimizer.step()``.
        """
        return bool(self._last_nonfinite) if self._last_nonfinite is not None else False

    def telemetry(self) -> dict[str, Any]:
        """``{"comm_bytes": int, "comm_time_s": float}`` of the last step, for ``TelemetryRecord(**...)``."""
        st = self.stats()
        return {"comm_bytes": int(st.get("comm_bytes", 0)), "comm_time_s": float(st.get("comm_time_s", 0.0))}

    def state_bytes(self) -> int:
        """Bytes held by the hook's buffers (residuals, references, warm starts) on this rank."""
        total = 0
        for bs in self._buckets.values():
            total += sum(t.numel() * t.element_size() for t in (bs.e, bs.h) if t is not None)
        for piece in self._orphans.values():
            total += sum(t.numel() * t.element_size() for t in piece.values())
        return total + sum(q.numel() * q.element_size() for q in self._q.values())

    # -------------------------------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue bit-for-bit (this rank's own; save one per rank).

        Buffers are stored per parameter, so the checkpoint does not depend on DDP's bucket layout.
        """
        params: dict[str, dict[str, torch.Tensor]] = {
            k: {n: t.detach().clone() for n, t in piece.items()} for k, piece in self._orphans.items()
        }
        for key, name, piece in self._bucket_pieces():
            params.setdefault(key, {})[name] = piece.detach().clone()
        for key, q in self._q.items():
            params.setdefault(key, {})["q"] = q.detach().clone()
        self._resolve(block=True)
        if self._round_gen is not None:
            round_state: torch.Tensor | None = self._round_gen.get_state()
        else:
            round_state = self._round_gen_state
        return {
            "format": _FORMAT,
            "rank": dist.get_rank(self.process_group) if dist.is_initialized() else 0,
            "world_size": self._world() if dist.is_initialized() else 1,
            "setting": self._setting.model_dump(),
            "iter": self.iter,
            "knobs": {
                "error_feedback": self.error_feedback,
                "ef_beta": self.ef_beta,
                "min_compression_rate": self.min_compression_rate,
                "block": self.block,
                "stochastic": self.stochastic,
                "start_iter": self.start_iter,
                "seed": self.seed,
            },
            "params": params,
            "rng_shared": self._shared_gen.get_state(),
            "rng_round": round_state,
            "totals": {"comm_bytes": self.total_comm_bytes, "comm_time_s": self.total_comm_time_s},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output saved by the same rank; knobs are taken from the checkpoint."""
        if state.get("format") != _FORMAT:
            raise ValueError(f"not a comm-hook state (format={state.get('format')!r}, expected {_FORMAT!r})")
        rank = dist.get_rank(self.process_group) if dist.is_initialized() else 0
        if state["rank"] != rank:
            raise ValueError(
                f"this hook state was saved by rank {state['rank']} but is loaded on rank {rank}: residuals "
                f"differ per rank, so load each rank's own file (e.g. hook_rank{rank}.pt)"
            )
        knobs = state["knobs"]
        self.error_feedback = bool(knobs["error_feedback"])
        self.ef_beta = float(knobs["ef_beta"])
        self.min_compression_rate = float(knobs["min_compression_rate"])
        self.block = knobs["block"]
        self.stochastic = bool(knobs["stochastic"])
        self.start_iter = int(knobs["start_iter"])
        self.seed = int(knobs["seed"])
        self._setting = CompressionSetting(**state["setting"])
        self.iter = int(state["iter"])
        self._buckets.clear()
        self._orphans = {}
        self._q = {}
        for key, piece in state["params"].items():
            if "q" in piece:
                self._q[key] = piece["q"].clone()
            rest = {n: t.clone() for n, t in piece.items() if n in ("e", "h")}
            if rest:
                self._orphans[key] = rest
        self._shared_gen.set_state(state["rng_shared"])
        self._round_gen = None
        self._round_gen_state = state["rng_round"]
        self.total_comm_bytes = int(state["totals"]["comm_bytes"])
        self.total_comm_time_s = float(state["totals"]["comm_time_s"])


def _keep_if(
    skip: torch.Tensor | None, old: torch.Tensor | None, new: torch.Tensor | None
) -> torch.Tensor | None:
    """``old`` where the step is skipped, else ``new`` (``None`` = all zeros), without a host sync."""
    if skip is None or (old is None and new is None):
        return new
    if old is None:
        assert new is not None
        return new.masked_fill(skip, 0.0)
    if new is None:
        return old.masked_fill(~skip, 0.0)
    return torch.where(skip, old, new)


def mango_comm_hook(state: MangoHookState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: compress each bucket as ``state`` says, all-reduce, return the mean gradient.

    With the setting off (``rank=0, bits=32, gamma=0``) and no residual pending this is exactly DDP's own
    all-reduce (scale by ``1/W``, sum): the gradients are bit-identical to a run without the hook.

    The collectives run synchronously inside the hook (on CUDA they are enqueued on NCCL's stream and only
    order the current stream; nothing waits on the host), and the returned future is already complete.

    :param state: a :class:`MangoHookState` (one per DDP model).
    :param bucket: the bucket DDP hands over (flat, dense gradients).
    :return: a completed future holding the bucket buffer, overwritten with the aggregated gradient.
    """
    out = state._run(bucket)
    if bucket.is_last():
        state._finish_step()
    fut: torch.futures.Future[torch.Tensor] = (
        torch.futures.Future(devices=[out.device]) if out.is_cuda else torch.futures.Future()
    )
    fut.set_result(out)
    return fut


def broadcast_setting(
    setting: CompressionSetting | None, src: int = 0, group: dist.ProcessGroup | None = None
) -> CompressionSetting:
    """Broadcast rank ``src``'s setting (e.g. the decision of ``AdaptiveCompression``) to every rank.

    Every rank calls it at the same point (between steps); only ``src`` needs a setting, the others may pass
    ``None``. Returns the setting all ranks then hold; apply it with :meth:`MangoHookState.apply_setting`::

        decided = controller_decision if dist.get_rank() == 0 else None
        state.apply_setting(broadcast_setting(decided, src=0))

    Cost: one broadcast of 24 bytes (three float64: rank, bits, gamma; exact for every grid value).

    :param src: global rank that decides.
    :param group: process group (``None``: default); on NCCL the message travels through the current GPU.
    """
    me = dist.get_rank()
    device = torch.device("cpu")
    if dist.get_backend(group) == dist.Backend.NCCL:
        device = torch.device("cuda", torch.cuda.current_device())
    if me == src:
        if not isinstance(setting, CompressionSetting):
            raise ValueError(
                f"rank {src} broadcasts the setting, so it must pass a CompressionSetting (got {setting!r})"
            )
        msg = torch.tensor([setting.rank, setting.bits, setting.gamma], dtype=torch.float64, device=device)
    else:
        msg = torch.zeros(3, dtype=torch.float64, device=device)
    dist.broadcast(msg, src=src, group=group)
    rank, bits, gamma = msg.tolist()
    if not all(math.isfinite(v) for v in (rank, bits, gamma)):
        raise RuntimeError(f"broadcast_setting received a non-finite message {msg.tolist()}")
    return CompressionSetting(rank=int(rank), bits=int(bits), gamma=float(gamma))
