"""The example training job of ``deploy/compose.yaml``: the byte-level LM, compression chosen by the service.

Configuration comes from the environment, as a container gets it:

=====================  =====================================================================================
``MANGO_SERVICE_URL``  policy service root, e.g. ``http://policy:8000`` (required)
``MANGO_API_KEY``      the service's user key, sent as ``X-API-Key`` (required; never the admin key)
``MANGO_POLICY``       service policy to ask (default ``default``)
``MANGO_OUT_DIR``      where the decision log and ``summary.json`` go (default ``<tmp>/mango-train``)
``MANGO_CACHE_DIR``    corpus cache (default ``<tmp>/mango-cache``: the job writes only to /tmp or mounts)
=====================  =====================================================================================

Flags (``--steps``, ``--interval``, ...) size the job. The job waits for the service's ``/readyz`` (up to
``--wait-s``), trains, and prints a summary. The service being slow or down never stops training (the
local fallback answers), but with ``--require-service`` (the default) the job exits 1 when no decision came
from the service, so a broken deployment does not pass silently.

::

    export MANGO_SERVICE_URL=http://127.0.0.1:8000 MANGO_API_KEY=...
    python examples/train_with_service.py --steps 200
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch
import torch.nn.functional as F
import tyro

from client.compression import MangoAdamW
from client.hook import AdaptiveCompression
from client.protocol import CompressionSetting
from envs.data import load_corpus
from envs.models import build_model
from envs.objectives import OBJECTIVE_PRESETS, preset


def wait_ready(url: str, timeout_s: float) -> bool:
    """Poll ``GET /readyz`` until it answers 200 or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def _default_threads() -> int:
    """Half the cores, at most 4: the example's small matrices gain nothing from more threads, and on a
    shared 2-core machine torch's default (every core) ran 3x slower than one thread (BENCHMARKS.md)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cores // 2))


@dataclass
class ExampleArgs:
    """A training job that asks the policy service (MANGO_SERVICE_URL, MANGO_API_KEY) for its settings."""

    steps: int = 600
    """optimizer steps"""
    interval: int = 20
    """optimizer steps per control interval"""
    batch_size: int = 16
    """windows per batch"""
    seq_len: int = 64
    """bytes per window"""
    model: str = "lm-tiny"
    """envs.models preset"""
    objective: str = "balanced"
    """objective preset of envs.objectives"""
    corpus_bytes: int = 2_000_000
    """size of the stdlib byte corpus"""
    threads: int = field(default_factory=_default_threads)
    """torch CPU threads (0: torch's default; default: half the cores, at most 4)"""
    wait_s: float = 120.0
    """how long to wait for the service's /readyz"""
    require_service: bool = True
    """fail when the service is not reachable (--no-require-service: train with the local fallback)"""


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(ExampleArgs, args=argv, description=ExampleArgs.__doc__)
    if args.objective not in OBJECTIVE_PRESETS:
        print(f"--objective: choose one of {sorted(OBJECTIVE_PRESETS)}", file=sys.stderr)
        return 2

    url = os.environ.get("MANGO_SERVICE_URL", "").rstrip("/")
    key = os.environ.get("MANGO_API_KEY", "")
    if not url or not key:
        print("set MANGO_SERVICE_URL and MANGO_API_KEY (see deploy/README.md)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.gettempdir())
    out_dir = Path(os.environ.get("MANGO_OUT_DIR") or tmp / "mango-train")
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(os.environ.get("MANGO_CACHE_DIR") or tmp / "mango-cache")
    if args.threads:
        torch.set_num_threads(args.threads)

    if not wait_ready(url, args.wait_s):
        print(
            f"the service at {url} was not ready after {args.wait_s:g} s; training on (fallback)", flush=True
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    corpus = load_corpus(args.corpus_bytes, cache=cache)
    model = build_model(args.model, seed=0).to(device)
    gen = torch.Generator().manual_seed(0)
    host = re.sub(r"[^A-Za-z0-9_.:-]", "-", os.environ.get("HOSTNAME", "local"))[:64]
    job_id = f"example-{host}-{os.getpid()}"  # the service logs and meters by it
    log_path = out_dir / f"{job_id}.decisions.jsonl"

    # The job starts uncompressed (like the policy's training episodes) and the service takes it from there.
    opt = MangoAdamW(model.parameters(), lr=3e-3, weight_decay=0.01, setting=CompressionSetting.off())
    hook = AdaptiveCompression(
        opt,
        server_url=url,
        api_key=key,
        objective=preset(args.objective),
        interval_steps=args.interval,
        planned_steps=args.steps,
        decision_log=log_path,
        job_id=job_id,
        policy=os.environ.get("MANGO_POLICY", "default"),
        flops_per_step=6.0 * sum(q.numel() for q in model.parameters()) * args.batch_size * args.seq_len,
    )
    t0 = time.perf_counter()
    with hook:
        for step in range(args.steps):
            for g in opt.param_groups:  # cosine decay to 10 %
                g["lr"] = 3e-3 * (0.1 + 0.45 * (1 + math.cos(math.pi * step / args.steps)))
            x, y = corpus.get_batch("train", args.batch_size, args.seq_len, gen)
            logits = model(x.to(device))  # (B, T, 256): next-byte logits
            loss = F.cross_entropy(logits.flatten(0, 1), y.to(device).flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            hook.step(loss)
            if (step + 1) % args.interval == 0 and hook.history:
                rec = hook.history[-1]
                last = hook.decisions[-1] if hook.decisions else None
                print(
                    f"step {rec.step:>5}  loss {rec.loss:.3f}  {rec.setting.label():<10}  "
                    f"state {rec.state_bytes / max(opt.dense_state_bytes(), 1):.1%} of AdamW's  "
                    f"energy {rec.energy_j:.1f} J ({rec.energy_source})  "
                    f"last decision: {last.source + ' ' + last.policy if last else '-'}",
                    flush=True,
                )
    c = hook.counters
    summary = {
        "job_id": job_id,
        "service_url": url,
        "steps": args.steps,
        "wall_s": round(time.perf_counter() - t0, 2),
        "final_loss": hook.history[-1].loss if hook.history else None,
        "final_setting": opt.setting.label(),
        "state_bytes_per_param": opt.state_bytes() / max(opt.dense_state_bytes() / 8, 1),
        "policies": sorted({d.policy for d in hook.decisions if d.source == "service"}),
        "decision_log": str(log_path),
        **c,
    }
    (out_dir / f"{job_id}.summary.json").write_text(json.dumps(summary, indent=2))
    print("summary: " + json.dumps(summary), flush=True)
    if args.require_service and c["service_decisions"] == 0:
        print(f"no decision came from the service at {url} (see {log_path})", file=sys.stderr)
        return 1
    return 0 if summary["final_loss"] is not None and math.isfinite(summary["final_loss"]) else 1


if __name__ == "__main__":
    sys.exit(main())
