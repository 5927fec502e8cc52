"""SimQ+ and RATQ: unbiasedness, exact code lengths, the seed's error bounds, bitstream round trips."""

from __future__ import annotations

import math

import pytest
import torch

from client.compression.unbiased import (
    RATQCode,
    SimQPlusCode,
    ln_star,
    ratq_bits,
    ratq_decode,
    ratq_encode,
    ratq_params,
    simq_plus_bits,
    simq_plus_bits_bound,
    simq_plus_decode,
    simq_plus_encode,
    tetration,
)


def _vector(d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # heavy-ish tails: a few large coordinates among many small ones
    return torch.randn(d, generator=gen) * torch.exp(torch.randn(d, generator=gen))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mean_and_mse(draw: object, y: torch.Tensor, n: int) -> tuple[torch.Tensor, float]:
    acc = torch.zeros_like(y, dtype=torch.float64)
    sq = 0.0
    for i in range(n):
        q = draw(i).double()  # type: ignore[operator]
        acc += q
        sq += float((q - y.double()).square().sum())
    return (acc / n).float(), sq / n


# ------------------------------------------------------------------------------------------------ SimQ+
@pytest.mark.parametrize(("d", "k"), [(40, 10), (40, 80), (7, 3)])
def test_simq_plus_is_unbiased_with_the_exact_variance(d: int, k: int) -> None:
    y = _vector(d, seed=d + k)
    n = 3000
    mean, mse = _mean_and_mse(
        lambda i: simq_plus_decode(simq_plus_encode(y, k, generator=torch.Generator().manual_seed(i))), y, n
    )
    l1, l2sq = float(y.abs().sum()), float(y.square().sum())
    exact = (l1 * l1 - l2sq) / k  # E||Q - y||^2 = (B1 ||y||_1 - ||y||^2) / k with B1 = ||y||_1
    assert mse == pytest.approx(exact, rel=0.12)
    # the mean of n draws is off by ~ sqrt(mse / n): error ~ 1 / sqrt(N)
    assert float((mean - y).norm()) < 4.0 * math.sqrt(exact / n)


def test_simq_plus_meets_theorem_4_2_bound_with_a_known_radius() -> None:
    d, k, p = 64, 16, 2.0
    y = _vector(d, seed=3)
    big_b = float(y.norm())  # ||y||_q <= B with q = 2
    radius = big_b * d ** (1 / p)  # the seed's SimQ parameter B d^(1/p) >= ||y||_1
    code = simq_plus_encode(y, k, l1_bound=radius, generator=torch.Generator().manual_seed(0))
    assert not code.side_info and code.bits == simq_plus_bits(d, k, side_info=False)
    _, mse = _mean_and_mse(
        lambda i: simq_plus_decode(
            simq_plus_encode(y, k, l1_bound=radius, generator=torch.Generator().manual_seed(i))
        ),
        y,
        2000,
    )
    assert mse <= 1.05 * big_b**2 * d ** (2 / p) / k  # alpha_0^2 - B^2 <= B^2 d^(2/p) / k
    exact = (radius * float(y.abs().sum()) - float(y.square().sum())) / k
    assert mse == pytest.approx(exact, rel=0.12)


@pytest.mark.parametrize(("d", "k"), [(1, 1), (5, 2), (40, 10), (300, 40), (1000, 1000)])
def test_simq_plus_bit_count_matches_the_formula(d: int, k: int) -> None:
    y = _vector(d, seed=k)
    code = simq_plus_encode(y, k, generator=torch.Generator().manual_seed(1))
    types = math.comb(d + k, k)
    assert code.bits == math.ceil(math.log2(types)) + k + 32 if types > 1 else code.bits == k + 32
    assert code.bits - 32 <= simq_plus_bits_bound(d, k) + 1e-9
    data = code.to_bytes()
    assert len(data) == math.ceil(code.bits / 8)
    back = SimQPlusCode.from_bytes(data, d, k)
    assert torch.equal(back.counts, code.counts)
    assert back.radius == code.radius
    assert torch.equal(simq_plus_decode(back), simq_plus_decode(code))


def test_simq_plus_round_trip_with_known_radius_and_zero_vector() -> None:
    y = _vector(30, seed=5)
    code = simq_plus_encode(y, 12, l1_bound=1e3, generator=torch.Generator().manual_seed(2))
    back = SimQPlusCode.from_bytes(code.to_bytes(), 30, 12, radius=1e3)
    assert torch.equal(simq_plus_decode(back), simq_plus_decode(code))
    zero = simq_plus_encode(torch.zeros(9), 4)
    assert int(zero.counts[0]) == 4 and torch.equal(simq_plus_decode(zero), torch.zeros(9))


def test_simq_plus_rejects_bad_arguments() -> None:
    y = torch.ones(4)
    with pytest.raises(ValueError, match="below"):
        simq_plus_encode(y, 3, l1_bound=1.0)
    with pytest.raises(ValueError, match="k="):
        simq_plus_encode(y, 0)
    with pytest.raises(ValueError, match="NaN"):
        simq_plus_encode(torch.tensor([1.0, math.nan]), 3)
    with pytest.raises(ValueError, match="expected"):
        SimQPlusCode.from_bytes(b"\x00", 40, 10)


# ------------------------------------------------------------------------------------------------- RATQ
def test_ratq_parameters_follow_seed_eq_8() -> None:
    for d in (1, 2, 3, 4, 5, 100, 4096, 10**6):
        p = ratq_params(d, 3)
        assert p.n >= d and p.n & (p.n - 1) == 0 and p.n < 2 * d + 1
        assert p.log_h == math.ceil(math.log2(1 + ln_star(p.n / 3)))
        assert p.h == 2**p.log_h and p.h >= 1 + ln_star(p.n / 3)
        assert p.s == max(p.log_h, 1) and p.k == 7
        ranges = p.ranges(radius=2.0)
        assert ranges == sorted(ranges)
        assert ranges[-1] >= 2.0  # the top range covers every rotated coordinate: always unbiased
        assert ranges[0] == pytest.approx(math.sqrt(3 * 4.0 / p.n + 2 * 4.0 / p.n * math.log(p.s)))
    assert [ln_star(x) for x in (0.5, 1.0, 2.0, math.e**math.e, 1e6)] == [0, 0, 1, 2, 3]
    assert tetration(0) == 1.0 and tetration(2) == pytest.approx(math.e**math.e)
    with pytest.raises(ValueError, match="bits"):
        ratq_params(10, 1)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_ratq_is_unbiased_within_the_seed_bound(bits: int) -> None:
    y = _vector(100, seed=bits)
    n = 1500
    mean, mse = _mean_and_mse(
        lambda i: ratq_decode(ratq_encode(y, bits, generator=torch.Generator().manual_seed(i))), y, n
    )
    p = ratq_params(100, bits)
    bound = float(y.square().sum()) * (9 + 3 * math.log(p.s)) / (p.k - 1) ** 2  # B = ||y||_2
    assert mse <= bound
    assert float((mean - y).norm()) < 4.0 * math.sqrt(mse / n)


def test_ratq_is_unbiased_for_a_fixed_rotation_and_a_spike() -> None:
    y = torch.zeros(64)
    y[5] = 10.0  # all energy in one coordinate: the rotation spreads it
    n = 2000
    mean, mse = _mean_and_mse(
        lambda i: ratq_decode(
            ratq_encode(y, 2, rotation_seed=11, generator=torch.Generator().manual_seed(i))
        ),
        y,
        n,
    )
    assert float((mean - y).norm()) < 4.0 * math.sqrt(mse / n)


@pytest.mark.parametrize(("d", "bits"), [(1, 2), (3, 2), (50, 3), (100, 4), (1000, 8)])
def test_ratq_bit_count_matches_the_formula_and_round_trips(d: int, bits: int) -> None:
    y = _vector(d, seed=d)
    code = ratq_encode(y, bits, generator=torch.Generator().manual_seed(0))
    p = code.params
    assert code.bits == ratq_bits(d, bits) == math.ceil(p.n / p.s) * p.log_h + p.n * bits + 32
    data = code.to_bytes()
    assert len(data) == math.ceil(code.bits / 8)
    back = RATQCode.from_bytes(data, d, bits, code.rotation_seed)
    assert torch.equal(back.codes, code.codes) and torch.equal(back.ranges, code.ranges)
    assert torch.equal(ratq_decode(back), ratq_decode(code))
    known = ratq_encode(y, bits, l2_bound=float(y.norm()) * 2, rotation_seed=3)
    assert known.bits == ratq_bits(d, bits, side_info=False)
    again = RATQCode.from_bytes(known.to_bytes(), d, bits, 3, radius=known.radius)
    assert torch.equal(ratq_decode(again), ratq_decode(known))


def test_ratq_rejects_a_bound_below_the_norm() -> None:
    with pytest.raises(ValueError, match="below"):
        ratq_encode(torch.ones(8), 3, l2_bound=1.0)
