"""`mango bench <name>`: each benchmark is a module with ``main(argv) -> int`` that prints a table."""

from __future__ import annotations

import importlib
import sys

BENCHES: dict[str, tuple[str, str]] = {
    "lm": ("benchmarks.lm", "AdamW vs MangoAdamW on the byte-level stdlib LM (seeds, CPU or GPU)"),
    "kernels": ("benchmarks.kernels", "quantize/dequantize/pack kernels (GPU; CPU torch path elsewhere)"),
    "service": ("benchmarks.service", "policy service latency/throughput under load (loopback)"),
    "env": ("benchmarks.env_throughput", "surrogate environment steps per second"),
    "policy": ("benchmarks.policy_latency", "policy inference latency (CPU)"),
    "overhead": ("benchmarks.client_overhead", "AdaptiveCompression + live server vs fixed setting"),
    "gpu": ("benchmarks.gpu", "the H200 suite: kernels, low-rank refresh, optimizer step, convergence"),
    "ddp": ("benchmarks.ddp", "DDP communication hooks on NCCL"),
    "fsdp": ("benchmarks.fsdp", "MangoAdamW under FSDP2 vs DDP on 2 gloo CPU ranks, DCP resume"),
    "signals": ("benchmarks.demo_signals", "the demo under Ctrl-C / SIGTERM at random times"),
    "sim2real": ("benchmarks.sim_to_real", "the surrogate's loss term against real demo runs (GPU logs)"),
    "obs-shift": ("benchmarks.obs_shift", "a demo's telemetry tokens beside the surrogate's (policy inputs)"),
    "replay": ("benchmarks.replay", "recorded demo runs' service decisions, replayed for candidate policies"),
    "first": ("benchmarks.first_decision", "the first decision per sample profile: measured/assumed share"),
    "heads": ("benchmarks.heads", "a policy's action heads on surrogate episodes, beside static settings"),
    "schedules": ("benchmarks.schedules", "open-loop schedules of settings on the same surrogate episodes"),
    "step-share": ("benchmarks.step_share", "recorded runs' training step against the hook's observed one"),
    "headroom": ("benchmarks.headroom", "the surrogate's room above the best static setting (oracles)"),
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHES:
        out = sys.stdout if not argv or argv[0] in ("-h", "--help") else sys.stderr
        if argv and out is sys.stderr:
            print(f"mango bench: unknown benchmark {argv[0]!r}", file=out)
        print("usage: mango bench <name> [args]   (mango bench <name> --help: its options)\n", file=out)
        for name, (_, help_) in BENCHES.items():
            print(f"  {name:<9} {help_}", file=out)
        return 0 if out is sys.stdout else 2
    module = importlib.import_module(BENCHES[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
