"""The fused path's batched basis refresh: decoding and rotating a shape group at once equals doing it
tensor by tensor (torch path on CPU; the fused tests run the whole refresh step against the torch path)."""

from __future__ import annotations

import pytest
import torch

from client.compression import MangoAdamW
from client.compression.quant import QuantizedTensor
from client.compression.refresh import _batchable, _rotate_batched, _rotate_each, _stack_values
from client.compression.slots import _load, _load_sqrt_v
from client.protocol import CompressionSetting as S


def _trained(setting: S, **kw: object) -> tuple[MangoAdamW, list[torch.nn.Parameter]]:
    """Four same-shaped projected matrices after three torch-path steps."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(32, 96, generator=gen)) for _ in range(4)]
    opt = MangoAdamW(params, lr=1e-2, setting=setting, min_compress_numel=256, fused=False, **kw)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    return opt, params


@pytest.mark.parametrize(
    ("setting", "kw"),
    [
        (S(rank=8, bits=4, gamma=0.5), {}),
        (S(rank=8, bits=8), {"factor_second_moment": True}),
        (S(rank=4, bits=16, gamma=1.0), {}),
        (S(rank=4, bits=32), {}),
        (S(rank=8, bits=3), {}),
    ],
    ids=lambda x: getattr(x, "label", lambda: "")() or str(x),
)
def test_batched_rotation_equals_tensor_by_tensor(setting: S, kw: dict) -> None:
    opt, params = _trained(setting, **kw)
    sts = [opt.state[p] for p in params]
    assert all(st["rank"] == setting.rank for st in sts)
    assert _batchable(opt, sts)
    if isinstance(sts[0]["m"], QuantizedTensor):
        stacked = _stack_values([st["m"] for st in sts])
        assert torch.equal(stacked, torch.stack([_load(st["m"]) for st in sts]))
    if "v" in sts[0]:
        stacked = _stack_values([st["v"] for st in sts], sqrt_v=True)
        assert torch.equal(stacked, torch.stack([_load_sqrt_v(st["v"]) for st in sts]))
    r, n = sts[0]["m"].shape
    q, _ = torch.linalg.qr(torch.randn(4, r, r, generator=torch.Generator().manual_seed(1)))
    W = q * 0.9  # a rotation that does not cover each direction fully: the second moment's fill is used
    E = _stack_values([st["e"] for st in sts]) if "e" in sts[0] else None
    rows = [st["v_row"].clone() for st in sts] if "v_row" in sts[0] else None

    def buffers() -> list[list[torch.Tensor]]:
        return [[torch.full((r, n), float("nan")) for _ in range(4)] for _ in sts]

    a, b = buffers(), buffers()
    _rotate_batched(sts, W, E, a)
    rows_batched = [st["v_row"].clone() for st in sts] if rows else None
    if rows:
        for st, row in zip(sts, rows):
            st["v_row"].copy_(row)
    _rotate_each(opt, params, sts, W, E, b)
    for fa, fb in zip(a, b):
        for k, (x, y) in enumerate(zip(fa, fb)):
            if torch.isnan(y).all():  # a slot this setting does not have: neither path wrote it
                assert torch.isnan(x).all(), k
            else:
                torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    if rows:
        assert rows_batched is not None
        for st, row, before in zip(sts, rows_batched, rows):
            torch.testing.assert_close(row, st["v_row"], rtol=1e-5, atol=1e-7)
            assert not torch.equal(row, before)


def test_mixed_layouts_fall_back_to_tensor_by_tensor() -> None:
    opt, params = _trained(S(rank=8, bits=8))
    sts = [opt.state[p] for p in params]
    sts[1]["m"] = _load(sts[1]["m"]).clone()  # one tensor's m held in fp32 (as after a setting change)
    assert not _batchable(opt, sts)
