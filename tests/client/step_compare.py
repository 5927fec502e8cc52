"""Shared by the tests that hold a batched torch-path step against the tensor-by-tensor one
(``test_optimizer_dense``: ``_DenseGroup``; ``test_optimizer_rank0``: ``Rank0Batch``): seeded parameters,
two parameter groups, seeded gradients with skipped steps, and the bit-for-bit comparison of two runs."""

from __future__ import annotations

from typing import Any

import torch

from client.compression import MangoAdamW

Run = tuple[list[torch.nn.Parameter], MangoAdamW]


def make_params(shapes: list[tuple[int, ...]], seed: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.1) for s in shapes]


def two_groups(params: list[torch.nn.Parameter], wd: float, maximize: bool) -> list[dict[str, Any]]:
    """Two groups that differ in every AdamW hyper-parameter; the first one's ``maximize`` as given."""
    return [
        {"params": params[::2], "weight_decay": wd, "maximize": maximize},
        {"params": params[1::2], "lr": 2e-3, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
    ]


def seeded_grads(params: list[torch.nn.Parameter], t: int) -> None:
    """Seeded gradients of mixed magnitudes; at odd steps the 2nd and 5th tensors get none (their step counts
    fall behind the others')."""
    gen = torch.Generator().manual_seed(100 + t)
    for j, p in enumerate(params):
        p.grad = None if t % 2 and j in (1, 4) else torch.randn(p.shape, generator=gen) * 10.0 ** (j % 3 - 2)


def assert_same(a: Run, b: Run) -> None:
    """Parameters and every stored state (tensors, and the fields of quantized ones) equal bit for bit."""
    (pa, oa), (pb, ob) = a, b
    for x, y in zip(pa, pb, strict=True):
        assert torch.equal(x, y), (x - y).abs().max()
    sa, sb = oa.state_dict()["state"], ob.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].keys() == sb[k].keys(), k
        for key in sa[k]:
            va, vb = sa[k][key], sb[k][key]
            if isinstance(va, torch.Tensor):
                assert torch.equal(va, vb), (k, key)
            elif isinstance(va, dict):
                assert va.keys() == vb.keys()
                for f in va:
                    same = torch.equal(va[f], vb[f]) if isinstance(va[f], torch.Tensor) else va[f] == vb[f]
                    assert same, (k, key, f)
            else:
                assert va == vb, (k, key)
