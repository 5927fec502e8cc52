"""``mango demo`` (``make demo``): the main job, end to end, on one machine (the entry point and its flow).

1. Starts the policy service (``mango serve``) as a subprocess on a free loopback port, with freshly generated
   random keys passed in its environment (not dev mode) and the shipped default policy; waits for ``/readyz``
   and asks ``GET /v1/policies`` what ``default`` answers with (the learned policy shipped in
   ``client/policy/default_policy/`` when there is one, else the heuristic fallback; the demo says which).
2. Trains the byte-level LM (:func:`envs.models.build_model`) on the Python-stdlib corpus
   (:func:`envs.data.load_corpus`) with :class:`~client.compression.MangoAdamW` and
   :class:`~client.hook.AdaptiveCompression`, which asks the service for a setting every control interval.
   The run starts uncompressed, like a job's first interval (and like the training environment's warm-up).
3. Runs the same job (same initial weights, same batches in the same order) with torch AdamW (fused on CUDA)
   and with a static setting (default ``r0/b8/g0``, see :attr:`DemoArgs.static_setting` for why), or with
   each of several static settings, so the verdict weighs the adaptive run against the best in hindsight.
4. Prints a summary table, writes ``summary.json``, ``summary.md``, ``report.png`` (loss curves, state
   memory and energy over time, the settings chosen), the decision log and the service's log and metrics to
   :attr:`DemoArgs.out_dir`.

The service is stopped on every exit path: normal end, exception, Ctrl-C (SIGINT) and SIGTERM (its whole
process group gets SIGTERM, then SIGKILL after a grace period); on Linux it also gets SIGTERM if the demo
process dies without cleaning up (``PR_SET_PDEATHSIG``). After SIGINT / SIGTERM the demo cleans up, then ends
by that signal (``main`` returns 130 / 143 and the ``mango`` entry point re-raises the signal; a shell shows
status 130 / 143).

Energy comes from the best meter available (:func:`client.telemetry.make_energy_meter`: NVML, Zeus, else a
model); on a machine without a GPU it is *modelled* (an H200-class energy model driven by FLOPs, bytes moved
and wall time) and every figure says so.

Run ``python -m mango_cli demo --help`` for the knobs; ``--short`` is a seconds-long smoke run for tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import tyro

from client.protocol import CompressionSetting
from demo.args import AUTO_LR, AUTO_MODEL, DemoArgs, choose_statics
from demo.plot import plot_report
from demo.report import (
    format_loss_vs_adamw,
    format_seed_table,
    format_seeds_verdict,
    format_table,
    format_verdict,
    machine_line,
    objective_scores,
    settle_alike,
    verdict_noise,
)
from demo.runs import RunResult, train_run, warm_up
from envs.data import load_corpus
from envs.objectives import preset
from policy_service.launch import ServiceError, ServiceProcess, pid_alive

__all__ = ["Terminated", "main", "run_demo"]


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so every ``finally`` runs (exit status 143)."""


def _per_seed(stem: str, seed: int, first: int) -> str:
    """``<stem>.jsonl`` for the first seed, ``<stem>-<seed>.jsonl`` for the others."""
    return f"{stem}.jsonl" if seed == first else f"{stem}-{seed}.jsonl"


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGINT raises ``KeyboardInterrupt`` and SIGTERM :class:`Terminated` inside the block (main thread).

    SIGINT's handler is installed explicitly: a process started in the background by a non-interactive
    shell inherits SIGINT *ignored*, and Python then never raises ``KeyboardInterrupt``.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise Terminated()

    old = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
        signal.SIGTERM: signal.signal(signal.SIGTERM, on_term),
    }
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_demo(args: DemoArgs, argv: list[str] | None = None) -> dict[str, Any]:
    """Run the demo (service started and stopped here); returns what ``summary.json`` holds."""
    args = args.resolved()
    args.check()
    t0 = time.perf_counter()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    if args.model == "auto":
        args = dataclasses.replace(args, model=AUTO_MODEL[device.type])
    if args.lr == 0:
        args = dataclasses.replace(args, lr=AUTO_LR[args.model])
    statics = choose_statics(args.static_setting, device.type)
    static_setting, static_why = statics[0]
    objective = preset(args.objective)
    print(
        f"MANGO demo: {args.model}, {args.steps} steps x {2 + len(statics)} runs"
        + (f" x {args.seeds} seeds" if args.seeds > 1 else "")
        + f", batch {args.batch_size}x{args.seq_len}, lr {args.lr:g}, "
        f"interval {args.interval_steps} steps, on {machine_line(device)}",
        flush=True,
    )
    corpus = load_corpus(args.corpus_bytes)
    vgen = torch.Generator().manual_seed(10_000 + args.seed)
    val = [corpus.get_batch("val", args.batch_size, args.seq_len, vgen) for _ in range(args.eval_batches)]
    summary: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "mango_cli", "demo", *(argv or [])]),
        "args": dataclasses.asdict(args),
        "device": str(device),
        "machine": machine_line(device),
        "objective": {"preset": args.objective, **objective.model_dump()},
        "static": {
            "setting": static_setting.label(),
            "why": static_why,
            "settings": [s.label() for s, _ in statics],
        },
    }
    service_env = {"OPENBLAS_NUM_THREADS": "1", "MANGO_LOG_LEVEL": "info"}  # as the service image does
    if args.policy_dir:
        service_env["MANGO_POLICY_DIR"] = str(Path(args.policy_dir).resolve())
    service = ServiceProcess(out / "service.log", env=service_env)
    try:
        print("starting the policy service (generated keys, not dev mode) ...", flush=True)
        ts = time.perf_counter()
        service.start(timeout_s=args.service_start_timeout_s)
        # written whole, then renamed: a watcher (benchmarks.demo_signals) that sees it reads it complete
        tmp = out / "service.json.tmp"
        tmp.write_text(json.dumps({"pid": service.pid, "port": service.port, "url": service.url}))
        tmp.replace(out / "service.json")
        policies = service.get("/v1/policies")
        default = policies["default"]
        kinds = {p["name"]: p for p in policies["policies"]}
        asked = default if args.policy == "default" else args.policy
        info = kinds.get(asked, {})
        kind = info.get("kind", "?")
        if kind == "learned":
            served = f"learned policy {asked!r} version {info.get('version')}"
        elif args.policy == "default":
            served = (
                f"heuristic {asked!r}: no learned default policy loaded from client/policy/default_policy/, "
                "so the service's 'default' falls back to its heuristic"
            )
        else:
            served = f"{kind} policy {asked!r}"
        summary["service"] = {
            "url": service.url,
            "pid": service.pid,
            "port": service.port,
            "start_s": round(time.perf_counter() - ts, 2),
            "policy_asked": args.policy,
            "default_answers_with": default,
            "served_by": asked,
            "served_kind": kind,
            "policy_errors": policies.get("errors", {}),
        }
        print(
            f"service ready at {service.url} (pid {service.pid}) in {summary['service']['start_s']:.1f} s; "
            f"policy {args.policy!r} -> {served}",
            flush=True,
        )
        for schedule, why in statics:
            print(f"static baseline: {schedule.label()} ({why})", flush=True)

        warm_s = warm_up(args, corpus, device, [x for s, _ in statics for x in s.settings()])
        if warm_s:
            print(f"kernels compiled before the timed runs in {warm_s:.1f} s (untimed)", flush=True)
            summary["warm_up_s"] = round(warm_s, 2)
        seeds = [args.seed + i for i in range(args.seeds)]
        all_runs: list[list[RunResult]] = []
        for seed in seeds:
            job = dataclasses.replace(args, seed=seed)  # initial weights, batch order, optimizer seed
            if len(seeds) > 1:
                print(f"seed {seed} ({len(all_runs) + 1} of {len(seeds)})", flush=True)
            all_runs.append(
                [
                    train_run(
                        job,
                        "adaptive (service)",
                        corpus,
                        val,
                        device,
                        setting=CompressionSetting.off(),
                        service=service,
                        objective=objective,
                        decision_log=out / _per_seed("decisions", seed, args.seed),
                        telemetry_log=out / _per_seed("telemetry", seed, args.seed),
                    ),
                    train_run(job, "adamw (torch)", corpus, val, device, setting=None),
                    *(
                        train_run(
                            job, f"static {s.label()}", corpus, val, device, setting=s.first, schedule=s
                        )
                        for s, _ in statics
                    ),
                ]
            )
        runs = all_runs[0]
        with contextlib.suppress(Exception):
            (out / "service_metrics.txt").write_text(service.get("/metrics"))
    finally:
        service.stop()
    energy_sources = sorted({r.energy_source for rs in all_runs for r in rs})
    energy_note = (
        "MODELLED: no GPU energy meter here, estimated from FLOPs, bytes and wall time"
        if energy_sources == ["modelled"]
        else f"measured: {', '.join(energy_sources)}"
    )
    summary["energy"] = {"sources": energy_sources, "note": energy_note}
    summary["runs"] = [r.as_dict() for r in runs]
    table = format_table(runs)
    per_seed = [objective_scores(rs, objective) for rs in all_runs]
    scores = per_seed[0]
    summary["objective_scores"] = scores
    verdict = format_verdict(runs, scores, args.objective, verdict_noise(objective, runs))
    if len(seeds) > 1:
        names = [r.name for r in runs]
        summary["seeds"] = [
            {"seed": seed, "runs": [r.as_dict() for r in rs], "objective_scores": sc}
            for seed, rs, sc in zip(seeds, all_runs, per_seed, strict=True)
        ]
        verdict = format_seeds_verdict(per_seed, names, args.objective)
        table += "\n\nJ per seed (each relative to its own AdamW run; lower is better):\n\n"
        table += format_seed_table(seeds, per_seed, names)
    verdict = settle_alike(verdict, all_runs, per_seed, args.objective)
    summary["verdict"] = verdict
    loss_line = format_loss_vs_adamw(all_runs)
    if loss_line:
        summary["loss_vs_adamw"] = loss_line
        verdict += "\n" + loss_line
    svc = summary["service"]
    title = (
        f"MANGO demo - {args.model}, {args.steps} steps, {summary['machine']};\n"
        f"adaptive: policy {args.policy!r} -> {svc['served_by']} ({svc['served_kind']})"
    )
    plot_report(runs, out / "report.png", title, energy_note)
    summary["total_wall_s"] = round(time.perf_counter() - t0, 2)
    summary["service"]["stopped"] = not pid_alive(int(summary["service"]["pid"]))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(
        f"# MANGO demo\n\n{title}\n\nenergy: {energy_note}\n\n{table}\n\n{verdict}\n"
    )
    print()
    print(table)
    print()
    print(
        f"objective {args.objective!r} (J = w_loss*loss + w_memory*memory + w_energy*energy + w_time*time, "
        "each relative to the AdamW run; lower is better)"
        + (f", seed {args.seed}: " if len(seeds) > 1 else ": ")
        + ", ".join(f"{r.name} {scores[r.name]:.3f}" for r in runs)
    )
    print(verdict)
    print(f"energy: {energy_note}")
    adaptive = runs[0]
    print(
        f"adaptive run: {adaptive.decisions} decisions ({adaptive.fallbacks} fallbacks, "
        f"{adaptive.setting_changes} setting changes) by {adaptive.policies or '-'}"
    )
    print(
        f"wrote {out}/summary.json, summary.md, report.png, decisions.jsonl, telemetry.jsonl, profile.json, "
        "service.log "
        f"(total {summary['total_wall_s']:.0f} s)"
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = tyro.cli(DemoArgs, args=argv, prog="mango demo", description=(__doc__ or "").splitlines()[0])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.resolved().check()
    except ValueError as exc:
        print(f"mango demo: {exc}", file=sys.stderr)
        return 2
    # torch.optim's first step imports torch._dynamo, which imports Triton: import them here, before the
    # signal handlers, so a SIGTERM never lands inside a C extension's initialization (the exception raised
    # there left Triton half-initialized and the process aborted at exit). Lazy on purpose: `--help` stays
    # fast.
    import torch._dynamo  # noqa: F401

    try:
        with _signals_raise():
            run_demo(args, argv)
    except Terminated:
        print("\nmango demo: terminated (SIGTERM); the policy service was stopped", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("\nmango demo: interrupted; the policy service was stopped", file=sys.stderr)
        return 130
    except ServiceError as exc:
        print(f"mango demo: {exc}\n(a slow machine: raise --service-start-timeout-s)", file=sys.stderr)
        return 1
    return 0
