"""MangoAdamW on FSDP2 (DTensor parameters): how the per-shard state travels through a checkpoint.

Under ``fully_shard`` every rank steps only its local shard of each parameter (a plain tensor sharing the
DTensor's storage). At rank 0 the state is laid out for that shard (quantization blocks over the local
shard, no communication); a projected matrix keeps the whole matrix's basis with its state split over the
ranks (:mod:`~client.compression.sharded_basis`), or, where the shapes do not split evenly, a basis of the
local shard. ``docs/architecture.md`` ("FSDP2") has the reasoning.

``torch.distributed.checkpoint`` (DCP) writes each rank's piece of a DTensor and dedups plain tensors, so
:meth:`MangoAdamW.state_dict` turns the state's tensors into DTensors (:func:`shard_entry`):

* a tensor shaped like its parameter's local shard (exact AdamW moments, fp32 / bf16 full-matrix states)
  takes the parameter's own placements: in the checkpoint it has the parameter's global shape (uneven shards
  included);
* any other tensor (packed codes and block scales, bases, factored statistics) and the per-rank scalars (the
  generator's state, the skip count) are stacked over the ranks: a ``(world, *local shape)`` DTensor sharded
  on dim 0, tagged ``{"__mango__": "per_rank", "t": ...}``. That needs the same local shape on every rank:
  a 1-D mesh and sharded dimensions divisible by its size (refused with the reason otherwise).

:func:`unshard` takes each rank's piece back. A checkpoint resumes on the same world size and sharding (the
per-rank pieces (bases, column blocks) cannot be re-cut for another one).
"""

from __future__ import annotations

import functools
from typing import Any

import torch

__all__ = ["is_dtensor", "local", "per_rank", "shard_entry", "unshard"]


@functools.cache
def _dtensor_type() -> type | None:
    """The DTensor class, imported once (``torch.distributed.tensor`` is a heavy import that a job without
    FSDP never needs; the optimizer asks about every parameter every step); None without distributed."""
    if not torch.distributed.is_available():
        return None
    from torch.distributed.tensor import DTensor

    return DTensor


def is_dtensor(t: Any) -> bool:
    """Whether ``t`` is a DTensor (``torch.distributed`` available and the type matches)."""
    cls = _dtensor_type()
    return cls is not None and isinstance(t, cls)


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (a plain tensor sharing its storage: in-place updates reach the
    parameter), else ``t`` itself."""
    if is_dtensor(t):
        return t.to_local()  # type: ignore[attr-defined,no-any-return]
    return t


def _contiguous_stride(shape: torch.Size) -> tuple[int, ...]:
    stride, acc = [], 1
    for d in reversed(shape):
        stride.append(acc)
        acc *= max(int(d), 1)
    return tuple(reversed(stride))


def per_rank(t: torch.Tensor, mesh: Any) -> dict[str, Any]:
    """``t`` (same shape on every rank) as one ``(world, *t.shape)`` DTensor sharded on dim 0, tagged."""
    from torch.distributed.tensor import DTensor, Shard

    if mesh.ndim != 1:
        raise ValueError(
            f"MangoAdamW checkpoints per-rank state on a 1-D device mesh; this one has {mesh.ndim} dims "
            "(HSDP / 2-D meshes are not supported yet)"
        )
    piece = t.detach().to(mesh.device_type).unsqueeze(0).contiguous()
    return {"__mango__": "per_rank", "t": DTensor.from_local(piece, mesh, [Shard(0)], run_check=False)}


def _even(p: Any) -> bool:
    mesh = p.device_mesh
    return bool(mesh.ndim == 1) and all(
        not pl.is_shard() or p.shape[pl.dim] % mesh.size() == 0 for pl in p.placements
    )


def shard_entry(entry: dict[str, Any], p: Any, where: str) -> dict[str, Any]:
    """A packed state entry of DTensor parameter ``p`` with every tensor made a DTensor (module docstring)."""
    from torch.distributed.tensor import DTensor

    lp = p.to_local()

    def wrap(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            if v.shape == lp.shape:
                return DTensor.from_local(
                    v.contiguous(),
                    p.device_mesh,
                    p.placements,
                    run_check=False,
                    shape=p.shape,
                    stride=_contiguous_stride(p.shape),
                )
            if not _even(p):
                raise ValueError(
                    f"state_dict: {where} (shape {tuple(p.shape)}, placements {p.placements}) has uneven "
                    f"shards on a {p.device_mesh.size()}-rank mesh; its compressed state can be checkpointed "
                    "only when the sharded dimensions divide by the mesh size (or keep it exact: "
                    "min_compress_numel above its size)"
                )
            return per_rank(v, p.device_mesh)
        if isinstance(v, dict):
            return {k: wrap(x) for k, x in v.items()}
        return v

    return {k: wrap(v) for k, v in entry.items()}


def unshard(v: Any) -> Any:
    """Inverse of :func:`shard_entry` / :func:`per_rank` on this rank: plain local tensors (recursively)."""
    if isinstance(v, dict):
        if v.get("__mango__") == "per_rank":
            t = v["t"]
            return local(t)[0]
        return {k: unshard(x) for k, x in v.items()}
    if is_dtensor(v):
        return local(v)
    return v
