"""MangoAdamW under FSDP2 (``fully_shard``, DTensor parameters) on 2 gloo CPU processes: the loss curve
matches DDP with the same setting, per-rank state is the single-process state over the world size, and a
``torch.distributed.checkpoint`` resume is bit-exact (``benchmarks.fsdp`` runs the comparison)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks import fsdp as bench
from client.compression.optimizer import MangoAdamW
from client.protocol import CompressionSetting
from policy_service.launch import free_port

pytestmark = pytest.mark.slow


def test_fsdp_matches_ddp_shards_state_and_resumes_bit_exactly() -> None:
    rows = {r["setting"]: r for r in bench.run(["r0b8", "r4b4g0.5"], steps=12, world=2)}
    r0 = rows["r0/b8/g0"]
    # rank 0: the quantization blocks of a row shard are the single process's blocks, so FSDP2 differs from
    # DDP only by the reduction order of the gradients: far inside the stochastic rounding's seed spread
    assert r0["ddp_seed_spread"] > 0
    assert r0["max_fsdp_vs_ddp"] <= r0["ddp_seed_spread"]
    assert abs(r0["bytes_ratio"] - 1.0) <= 0.05
    for r in rows.values():  # projected with gamma > 0 too: bases, references, error buffers
        assert r["dcp_bit_exact"], r
        assert r["final_fsdp"] < 0.5 * r["final_ddp"] + r["final_ddp"]  # trained, not diverged


def _uneven_worker(rank: int, world: int, port: int, out: str) -> None:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    from torch.distributed.fsdp import fully_shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 63), torch.nn.Linear(63, 3))  # 63 rows: uneven shards
        fully_shard(model)
        result: dict[str, object] = {}
        for numel, key in ((1024, "compressed"), (10**6, "exact")):
            opt = MangoAdamW(model.parameters(), lr=1e-2, setting=CompressionSetting(rank=0, bits=8),
                             min_compress_numel=numel)  # fmt: skip
            model(torch.randn(4, 64)).square().mean().backward()
            opt.step()
            try:
                sd = get_optimizer_state_dict(model, opt)
                result[key] = "ok"
                opt.load_state_dict(sd)  # plain (non-DCP) round trip on the same ranks
            except ValueError as exc:
                result[key] = str(exc)
        if rank == 0:
            Path(out).write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_uneven_shards_exact_state_checkpoints_compressed_is_refused_clearly(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    mp.spawn(_uneven_worker, args=(2, free_port(), str(out)), nprocs=2)
    result = json.loads(out.read_text())
    assert result["exact"] == "ok"  # moments shaped like the shard take the parameter's placements
    assert "uneven shards on a 2-rank mesh" in result["compressed"]
    assert "min_compress_numel" in result["compressed"]
