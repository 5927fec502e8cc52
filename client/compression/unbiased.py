"""Unbiased fixed-length quantizers of Mayekar & Tyagi: SimQ+ and RATQ (seed: limits-on-gradient-compression).

Both map a vector ``y`` in R^d to a code of a length that depends only on the knobs (never on ``y``), and
decode to an **unbiased** estimate: ``E[decode(encode(y))] = y``. That is what SGD needs (seed section 2.2:
it suffices to have an unbiased estimate with a bounded second moment), and it is why they carry no error
feedback. Each ``encode`` returns a code object whose ``bits`` is the exact length of its fixed-length
bitstream (``to_bytes()`` writes it; ``from_bytes`` reads it back), and ``decode`` reconstructs.

SimQ+ (seed section 4.2, eq. 5; Theorem 4.2)
    ``k`` independent draws of SimQ with radius ``B1 >= ||y||_1``: draw index ``i`` with probability
    ``|y_i| / B1`` (index 0, "nothing", with the rest), output ``B1 sign(y_i) e_i``; SimQ+ averages the k
    draws. The code is the *type* (how often each of the ``d + 1`` indices was drawn; ``C(d + k, k)`` types,
    enumerative code) plus ``k`` sign bits for the drawn indices in increasing order:
    ``ceil(log2 C(d + k, k)) + k`` bits ``<= k log2 e + k log2(d / k + 1) + k`` (the theorem's bound).
    Error: ``E||Q(y) - y||^2 = (B1 ||y||_1 - ||y||^2) / k`` exactly (<= ``B^2 d^(2/p) / k`` in the theorem's
    setting). Knob: ``k``, the number of draws; bits grow about linearly in ``k``, error falls as ``1 / k``.
    ``k = d`` (p = 2) costs about ``3 d`` bits (the bound says ``3.44 d``). Use when you want a tiny code
    (``k << d``: O(k log d) bits); its error at small ``k`` is large (seed Remark 8).

RATQ (seed section 5, eq. 8; Mayekar & Tyagi 2019)
    Random rotation ``R = H D / sqrt(n)`` (Walsh-Hadamard ``H``, random signs ``D``; ``y`` zero-padded to
    ``n = 2^ceil(log2 d)``), then blocks of ``s`` rotated coordinates, each quantized by the adaptive
    tetra-iterated uniform quantizer: the block picks the smallest dynamic range ``M_j`` (of ``h``) that
    covers its largest value (``log2 h`` bits per block), then every coordinate is rounded stochastically to
    one of ``k`` evenly spaced levels in ``[-M_j, M_j]`` (``log2(k + 1)`` bits per coordinate,
    ``k + 1 = 2^bits``; one of the ``2^bits`` codewords stays unused, as in the seed's count).
    Parameters (seed eq. 8 with ``d' = n`` and ``B' = B >= ||y||_2``): ``m = 3 B^2 / n``,
    ``m0 = 2 B^2 / n * ln s``, ``log2 h = ceil(log2(1 + ln*(n / 3)))``, ``s = log2 h``; the ranges are
    ``M_j = sqrt(m e^{*j} + m0)`` with tetration ``e^{*0} = 1``, ``e^{*j} = e^{e^{*(j-1)}}`` (Mayekar & Tyagi
    2019; the seed cites it), so ``M_{h-1} >= B`` covers every rotated coordinate and RATQ is always
    unbiased. Length: ``ceil(n / s) log2 h + n log2(k + 1)`` bits; error (seed, Lemma 5.2's proof)
    ``E||Q(y) - y||^2 <= B^2 (9 + 3 ln s) / (k - 1)^2``. Knob: ``bits`` per coordinate (>= 2, since
    ``k >= 3``); each extra bit cuts the error about 4x. Use when you want ~bits-per-coordinate control with a
    worst-case guarantee that does not depend on the vector's shape (the rotation flattens outliers).

Side information: with no bound given, ``B1 = ||y||_1`` (SimQ+) or ``B = ||y||_2`` (RATQ) is computed from
``y`` and sent as one float32: the codes' ``bits`` then include those 32 bits. The rotation's sign pattern is
shared randomness (a seed both ends know, as in the paper) and costs no bits.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

__all__ = [
    "RATQCode",
    "RATQParams",
    "SimQPlusCode",
    "ln_star",
    "ratq_bits",
    "ratq_decode",
    "ratq_encode",
    "ratq_params",
    "simq_plus_bits",
    "simq_plus_bits_bound",
    "simq_plus_decode",
    "simq_plus_encode",
    "tetration",
]

SIDE_INFO_BITS = 32  # one float32 norm when the bound is taken from the data


# -------------------------------------------------------------------------------------------- helpers
def _check_vector(y: torch.Tensor) -> torch.Tensor:
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        raise TypeError(f"y must be a floating-point torch.Tensor, got {type(y).__name__}")
    if y.numel() == 0:
        raise ValueError("y is empty; quantize a vector with at least one value")
    flat = y.detach().reshape(-1).float()
    if not bool(torch.isfinite(flat).all()):
        raise ValueError("y contains NaN or inf; sanitize it before quantizing")
    return flat


def _pack_ints(values: list[int], width: int) -> int:
    """Concatenate non-negative ints of ``width`` bits each (first value in the lowest bits)."""
    out = 0
    for i, v in enumerate(values):
        out |= int(v) << (i * width)
    return out


def _unpack_ints(word: int, width: int, count: int) -> list[int]:
    mask = (1 << width) - 1
    return [(word >> (i * width)) & mask for i in range(count)]


def _float_bits(x: float) -> int:
    return int(torch.tensor([x], dtype=torch.float32).view(torch.int32).item()) & 0xFFFFFFFF


def _float32_at_least(x: float) -> float:
    """The smallest float32 value ``>= x`` (the radius travels as float32 and must still bound the norm)."""
    t = torch.tensor(x, dtype=torch.float32)
    if float(t) < x:
        t = torch.nextafter(t, torch.tensor(math.inf))
    return float(t)


def _bits_float(b: int) -> float:
    v = b if b < 2**31 else b - 2**32
    return float(torch.tensor([v], dtype=torch.int32).view(torch.float32).item())


# --------------------------------------------------------------------------------------------- SimQ+
@functools.lru_cache(maxsize=1024)
def simq_plus_bits(d: int, k: int, *, side_info: bool = True) -> int:
    """Exact length of a SimQ+ code: ``ceil(log2 C(d + k, k)) + k`` (+ 32 for the data-derived radius).

    Cached: the binomial of large ``d + k`` is a big-integer computation (milliseconds at d ~ 1e4).
    """
    if d < 1 or k < 1:
        raise ValueError(f"d={d} and k={k} must both be >= 1")
    types = math.comb(d + k, k)
    return (types - 1).bit_length() + k + (SIDE_INFO_BITS if side_info else 0)


def simq_plus_bits_bound(d: int, k: int) -> float:
    """Theorem 4.2's length bound: ``k log2 e + k log2(d / k + 1) + k`` bits (without side information)."""
    return k * math.log2(math.e) + k * math.log2(d / k + 1) + k


@dataclass(frozen=True)
class SimQPlusCode:
    """A SimQ+ code: the type of ``k`` draws over ``d + 1`` indices plus signs.

    :ivar d: input dimension.
    :ivar k: number of SimQ draws (the knob).
    :ivar counts: int64 ``(d + 1,)``; ``counts[0]``: draws of "nothing", ``counts[1 + i]``: draws of ``i``.
    :ivar negative: bool ``(d,)``; the sign of each coordinate (only drawn ones are transmitted).
    :ivar radius: ``B1``, the l1 radius SimQ used (float32-representable).
    :ivar side_info: whether ``radius`` came from the data and travels with the code (32 bits).
    """

    d: int
    k: int
    counts: torch.Tensor
    negative: torch.Tensor
    radius: float
    side_info: bool

    @property
    def bits(self) -> int:
        """Exact length of :meth:`to_bytes`'s bitstream (fixed: a function of ``d``, ``k``, ``side_info``)."""
        return simq_plus_bits(self.d, self.k, side_info=self.side_info)

    def to_bytes(self) -> bytes:
        """The fixed-length bitstream: [radius (32)] + enumerative rank of the type + ``k`` sign bits.

        Cost: ``O((d + k) k)`` big-integer work in Python; meant for tests and small vectors, not a hot path.
        """
        counts = [int(c) for c in self.counts.tolist()]
        rank, star = 0, 0  # stars-and-bars: the type is k stars among d bars; colex rank of star positions
        for j, c in enumerate(counts):
            for _ in range(c):
                star += 1
                rank += math.comb(star - 1 + j, star)  # position = stars before + bars before (= j)
        drawn = [i for i in range(self.d) if counts[i + 1] > 0]
        sign_bits = _pack_ints([int(bool(self.negative[i])) for i in drawn], 1)
        type_bits = simq_plus_bits(self.d, self.k, side_info=False) - self.k
        word = sign_bits | (rank << self.k)
        if self.side_info:
            word |= _float_bits(self.radius) << (self.k + type_bits)
        return word.to_bytes(-(-self.bits // 8), "little")

    @classmethod
    def from_bytes(cls, data: bytes, d: int, k: int, radius: float | None = None) -> SimQPlusCode:
        """Read :meth:`to_bytes` output; pass ``radius`` when it was a known bound (no side information)."""
        side = radius is None
        total = simq_plus_bits(d, k, side_info=side)
        if len(data) != -(-total // 8):
            raise ValueError(f"expected {-(-total // 8)} bytes for d={d}, k={k}, got {len(data)}")
        word = int.from_bytes(data, "little")
        type_bits = simq_plus_bits(d, k, side_info=False) - k
        if side:
            radius = _bits_float((word >> (k + type_bits)) & 0xFFFFFFFF)
        rank = (word >> k) & ((1 << type_bits) - 1)
        counts = [0] * (d + 1)
        n = d + k
        c = n - 1
        binom = math.comb(c, k)
        for j in range(k, 0, -1):  # greedy colex unranking, binomials updated incrementally
            while binom > rank:
                binom = binom * (c - j) // c  # C(c - 1, j)
                c -= 1
            rank -= binom
            counts[c - (j - 1)] += 1  # the j-th star sits after c - (j - 1) bars
            if j > 1:
                binom = binom * j // c  # C(c - 1, j - 1)
                c -= 1
        drawn = [i for i in range(d) if counts[i + 1] > 0]
        neg = torch.zeros(d, dtype=torch.bool)
        for pos, i in enumerate(drawn):
            neg[i] = bool((word >> pos) & 1)
        assert radius is not None
        return cls(d, k, torch.tensor(counts, dtype=torch.int64), neg, float(radius), side)


def simq_plus_encode(
    y: torch.Tensor, k: int, *, l1_bound: float | None = None, generator: torch.Generator | None = None
) -> SimQPlusCode:
    """SimQ+ encoder (seed eq. 5): ``k`` independent SimQ draws with radius ``B1``.

    :param y: the vector (any shape; flattened), finite.
    :param k: draws, ``>= 1``: error ``(B1 ||y||_1 - ||y||^2) / k``, length ~ ``k log2(e (d / k + 1)) + k``.
    :param l1_bound: a known ``B1 >= ||y||_1`` (the seed's ``B d^(1/p)`` for ``||y||_q <= B``), shared by both
        ends (no side information). ``None``: ``B1 = ||y||_1`` (the smallest, best), sent as float32.
    :param generator: randomness of the draws (on ``y``'s device).
    """
    flat = _check_vector(y)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} must be an int >= 1 (the number of SimQ draws)")
    l1 = float(flat.abs().sum())
    if l1_bound is None:
        radius = _float32_at_least(l1)
    else:
        radius = float(l1_bound)
        if not radius >= l1 * (1 - 1e-6):
            raise ValueError(f"l1_bound={l1_bound} is below ||y||_1={l1}; SimQ needs B1 >= ||y||_1")
    d = flat.numel()
    counts = torch.zeros(d + 1, dtype=torch.int64, device=flat.device)
    if radius <= 0.0:
        counts[0] = k
    else:
        p = torch.empty(d + 1, dtype=torch.float64, device=flat.device)
        p[1:] = flat.abs().double() / radius
        p[0] = max(0.0, 1.0 - float(p[1:].sum()))
        draws = torch.multinomial(p, k, replacement=True, generator=generator)
        counts = torch.bincount(draws, minlength=d + 1)
    return SimQPlusCode(d, k, counts.cpu(), (flat < 0).cpu(), radius, l1_bound is None)


def simq_plus_decode(code: SimQPlusCode, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(1 / k) sum_draws B1 sign(y_i) e_i``: float32 ``(d,)`` on ``device``."""
    sign = 1.0 - 2.0 * code.negative.to(torch.float32)
    out = code.counts[1:].to(torch.float32) * sign * (code.radius / code.k)
    return out.to(device)


# ----------------------------------------------------------------------------------------------- RATQ
def ln_star(x: float) -> int:
    """``ln*(x)``: how many times ``ln`` must be applied to ``x`` before the result is ``<= 1``."""
    n = 0
    while x > 1.0:
        x = math.log(x)
        n += 1
    return n


def tetration(j: int) -> float:
    """``e^{*j}``: ``e^{*0} = 1``, ``e^{*j} = e^{e^{*(j-1)}}`` (``inf`` once it overflows a float)."""
    v = 1.0
    for _ in range(j):
        v = math.exp(v) if v < 709.0 else math.inf
    return v


@dataclass(frozen=True)
class RATQParams:
    """RATQ's parameters for dimension ``d`` (seed eq. 8 with ``d' = n``), radius-free part.

    :ivar d: input dimension. :ivar n: rotated (padded) dimension, a power of two ``>= d``.
    :ivar bits: bits per coordinate, ``log2(k + 1)``. :ivar k: uniform levels per range (``2^bits - 1``).
    :ivar log_h: bits per block for the range index. :ivar h: number of ranges (``2^log_h``).
    :ivar s: coordinates per block (``log_h``, at least 1).
    """

    d: int
    n: int
    bits: int
    k: int
    log_h: int
    h: int
    s: int

    @property
    def num_blocks(self) -> int:
        return -(-self.n // self.s)

    def ranges(self, radius: float) -> list[float]:
        """``M_j = sqrt(m e^{*j} + m0)``, ``j < h``, for ``||y||_2 <= radius``."""
        m = 3.0 * radius**2 / self.n
        m0 = 2.0 * radius**2 / self.n * math.log(self.s)
        return [math.sqrt(m * e + m0) if e < math.inf else math.inf for e in map(tetration, range(self.h))]


@functools.lru_cache(maxsize=1024)
def ratq_params(d: int, bits: int) -> RATQParams:
    """Parameters of seed eq. 8 for a ``d``-vector at ``bits`` per coordinate (``bits >= 2``)."""
    if d < 1:
        raise ValueError(f"d={d} must be >= 1")
    if not isinstance(bits, int) or bits < 2:
        raise ValueError(f"bits={bits!r} must be an int >= 2 (k = 2^bits - 1 >= 3 levels per range)")
    n = 1 << max(d - 1, 0).bit_length()
    log_h = math.ceil(math.log2(1 + ln_star(n / 3)))
    h = 1 << log_h
    return RATQParams(d=d, n=n, bits=bits, k=(1 << bits) - 1, log_h=log_h, h=h, s=max(log_h, 1))


def ratq_bits(d: int, bits: int, *, side_info: bool = True) -> int:
    """Exact RATQ length: ``ceil(n / s) log2 h + n bits`` (+ 32 for the data-derived radius)."""
    p = ratq_params(d, bits)
    return p.num_blocks * p.log_h + p.n * p.bits + (SIDE_INFO_BITS if side_info else 0)


def _signs(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (n,), generator=gen).float() * 2.0 - 1.0


def _fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalized fast Walsh-Hadamard transform of a length-``2^t`` vector (``H`` is symmetric)."""
    n = x.numel()
    y = x.reshape(1, n)
    h = 1
    while h < n:
        y = y.view(-1, 2, h)  # (pairs of blocks, 2, h)
        y = torch.stack((y[:, 0] + y[:, 1], y[:, 0] - y[:, 1]), dim=1)
        h *= 2
    return y.reshape(n)


@dataclass(frozen=True)
class RATQCode:
    """A RATQ code: range index per block and level code per rotated coordinate.

    :ivar params: the :class:`RATQParams`.
    :ivar ranges: int64 ``(num_blocks,)``, index ``j < h`` of each block's range.
    :ivar codes: int64 ``(n,)``, level ``t < k`` of each rotated coordinate (``-M + t 2M / (k - 1)``).
    :ivar radius: the l2 radius ``B`` the parameters were set with (float32-representable).
    :ivar rotation_seed: seed of the random signs ``D`` (shared randomness; not counted in ``bits``).
    :ivar side_info: whether ``radius`` came from the data and travels with the code (32 bits).
    """

    params: RATQParams
    ranges: torch.Tensor
    codes: torch.Tensor
    radius: float
    rotation_seed: int
    side_info: bool

    @property
    def bits(self) -> int:
        """Exact length of :meth:`to_bytes`'s bitstream."""
        return ratq_bits(self.params.d, self.params.bits, side_info=self.side_info)

    def to_bytes(self) -> bytes:
        """Fixed-length bitstream: [radius (32)] + ``log_h`` bits per block + ``bits`` bits per coordinate."""
        p = self.params
        word = _pack_ints(self.codes.tolist(), p.bits)
        if p.log_h:
            word |= _pack_ints(self.ranges.tolist(), p.log_h) << (p.n * p.bits)
        if self.side_info:
            word |= _float_bits(self.radius) << (p.n * p.bits + p.num_blocks * p.log_h)
        return word.to_bytes(-(-self.bits // 8), "little")

    @classmethod
    def from_bytes(
        cls, data: bytes, d: int, bits: int, rotation_seed: int, radius: float | None = None
    ) -> RATQCode:
        """Read :meth:`to_bytes` output (the decoder knows ``d``, ``bits`` and the shared rotation seed)."""
        p = ratq_params(d, bits)
        side = radius is None
        total = ratq_bits(d, bits, side_info=side)
        if len(data) != -(-total // 8):
            raise ValueError(f"expected {-(-total // 8)} bytes for d={d}, bits={bits}, got {len(data)}")
        word = int.from_bytes(data, "little")
        codes = _unpack_ints(word, p.bits, p.n)
        ranges = [0] * p.num_blocks
        if p.log_h:
            ranges = _unpack_ints(word >> (p.n * p.bits), p.log_h, p.num_blocks)
        if side:
            radius = _bits_float((word >> (p.n * p.bits + p.num_blocks * p.log_h)) & 0xFFFFFFFF)
        assert radius is not None
        return cls(p, torch.tensor(ranges), torch.tensor(codes), float(radius), rotation_seed, side)


def ratq_encode(
    y: torch.Tensor,
    bits: int,
    *,
    l2_bound: float | None = None,
    rotation_seed: int | None = None,
    generator: torch.Generator | None = None,
) -> RATQCode:
    """RATQ encoder: rotate, pick each block's range, round each coordinate stochastically.

    :param y: the vector (any shape; flattened), finite.
    :param bits: bits per rotated coordinate, ``>= 2`` (``k = 2^bits - 1`` levels per range).
    :param l2_bound: a known ``B >= ||y||_2`` shared by both ends; ``None``: ``||y||_2``, sent as float32.
    :param rotation_seed: seed of the random signs (shared randomness); ``None``: drawn from ``generator``.
    :param generator: randomness of the rounding (CPU generator; the work runs on ``y``'s device).
    """
    flat = _check_vector(y)
    p = ratq_params(flat.numel(), bits)
    l2 = float(flat.norm())
    if l2_bound is None:
        radius = _float32_at_least(l2)
    else:
        radius = float(l2_bound)
        if not radius >= l2 * (1 - 1e-6):
            raise ValueError(f"l2_bound={l2_bound} is below ||y||_2={l2}; RATQ needs B >= ||y||_2")
    if rotation_seed is None:
        rotation_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    dev = flat.device
    x = torch.zeros(p.n, dtype=torch.float32, device=dev)
    x[: p.d] = flat
    z = _fwht(x * _signs(p.n, rotation_seed).to(dev)) / math.sqrt(p.n)  # R y, |z_i| <= ||y||_2
    ranges_t = torch.tensor(p.ranges(radius), dtype=torch.float64, device=dev)  # (h,)
    zb = torch.nn.functional.pad(z, (0, p.num_blocks * p.s - p.n)).view(p.num_blocks, p.s)
    ranges = torch.searchsorted(ranges_t, zb.abs().amax(dim=1).double().contiguous())  # smallest M_j >= max
    ranges = ranges.clamp_(max=p.h - 1)
    big_m = ranges_t[ranges].repeat_interleave(p.s)[: p.n]  # (n,) the range of each coordinate
    pos = ((z.double() + big_m) / (2.0 * big_m) * (p.k - 1)).clamp(0.0, p.k - 1)
    low = torch.floor(pos)
    u = torch.rand(p.n, generator=generator, dtype=torch.float64).to(dev)
    codes = (low + (u < pos - low).double()).clamp(max=p.k - 1).long()
    return RATQCode(p, ranges.cpu(), codes.cpu(), radius, rotation_seed, l2_bound is None)


def ratq_decode(code: RATQCode, device: torch.device | str = "cpu") -> torch.Tensor:
    """``R^T`` of the dequantized rotated vector: float32 ``(d,)`` on ``device``."""
    p = code.params
    ranges_t = torch.tensor(p.ranges(code.radius), dtype=torch.float64, device=device)
    big_m = ranges_t[code.ranges.to(device)].repeat_interleave(p.s)[: p.n]
    z = -big_m + code.codes.to(device).double() * (2.0 * big_m / (p.k - 1))
    x = _fwht(z.float()) / math.sqrt(p.n) * _signs(p.n, code.rotation_seed).to(device)
    return x[: p.d]
