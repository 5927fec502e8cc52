"""`mango bench service`: latency and throughput of the policy service under open-loop load on loopback.

What runs where:

* the server: ``mango serve`` (uvicorn, one worker, uvloop + httptools when installed) in a subprocess, with
  ``MANGO_BENCH_ENDPOINTS=true`` so it also has ``POST /bench/empty`` (no auth, no body parsing: the floor
  of the HTTP stack), and a TinyFormer artifact (random weights: inference costs the same as trained ones);
* the load: a separate process (``python -m benchmarks.service --loadgen SPEC``) with asyncio raw HTTP/1.1
  keep-alive connections, sending requests on a fixed schedule (open loop: the rate does not drop when the
  server slows down) and timing each from write to the last byte of the response;
* this process: orchestration, the hot-reload check (re-export + ``POST /v1/policies/reload?force=true`` N
  times while the load runs), the table, ``results/service-<time>.json`` and a dated section appended to
  ``BENCHMARKS.md``.

Endpoints measured the same way at each rate: ``empty`` (``/bench/empty``), ``decide-static`` (``/v1/decide``
answered by the static heuristic) and ``decide-tinyformer`` (``/v1/decide`` through encode + TinyFormer +
shield). Every request carries the same 8-record decide body. A response is an error unless it is 200 (and,
for decide, holds a setting). Columns: client-side percentiles (write to last byte); "p99 from schedule"
counts from the planned send time, so client lateness and waits for a free connection are included;
"in-server mean" is the mean of the server's own histogram (outermost middleware to response end, warm-up
included), so "mean" minus it is roughly the loopback + uvicorn parsing + client cost per request;
"server CPU us/req" is the server process's user + system CPU time over the row divided by its requests:
unlike the latencies it does not grow when other processes compete for the cores, and 1e6 / it is the
request rate one free core could sustain.

Cold start (``--cold-starts N``, first, before any load): ``N`` launches of the same server, each timed
from the child's spawn to its first 200 of ``GET /readyz`` (polled every 10 ms); the median is the figure
(the issue's goal: 2 s). Each launch also records what ``/readyz`` said of the hot-reload worker at that
moment (``starting`` or ``stopped``: readiness did not wait for it). ``--no-load`` measures only that.

Knobs (:class:`BenchConfig`): ``--rates`` (req/s), ``--duration`` (seconds measured per rate and endpoint,
after ``--warmup``), ``--connections`` (client keep-alive pool; requests wait for a free one, and that wait
counts in the "from schedule" latency), ``--reloads`` (during the reload phase at ``--reload-rate``).
On a shared machine, run it twice and compare: other processes' load shows up in p99.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tyro

from benchmarks.common import append_section
from envs.hardware import PROFILE_DIR
from policy_service.launch import ServiceProcess

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["BenchConfig", "ServiceBenchArgs", "main"]


@dataclass
class BenchConfig:
    """Arguments of ``mango bench service``.

    :param rates: target request rates, requests per second.
    :param duration_s: measured seconds per (rate, endpoint).
    :param warmup_s: unmeasured seconds at the same rate before each measurement.
    :param connections: keep-alive connections of the load generator.
    :param reloads: hot reloads during the reload phase (0 skips the phase).
    :param reload_rate: request rate of the reload phase.
    :param endpoints: which of ``empty``, ``decide-static``, ``decide-tinyformer`` to measure.
    :param out_dir: where the JSON result goes.
    :param benchmarks_md: the file a dated section is appended to (``--no-append`` skips it).
    :param cold_starts: launches timed for the cold start (0 skips them).
    :param load: run the load phases (``False``: the cold start only).
    """

    rates: tuple[int, ...] = (100, 250, 500)
    duration_s: float = 6.0
    warmup_s: float = 1.0
    connections: int = 32
    reloads: int = 10
    reload_rate: int = 500
    endpoints: tuple[str, ...] = ("empty", "decide-static", "decide-tinyformer")
    out_dir: Path = ROOT / "results"
    benchmarks_md: Path = ROOT / "BENCHMARKS.md"
    append: bool = True
    cold_starts: int = 5
    load: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- load generator


def _percentile(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, round(q / 100.0 * (len(sorted_vals) - 1))))
    return sorted_vals[k]


async def _loadgen(spec: dict[str, Any]) -> dict[str, Any]:
    """Open-loop load at ``spec['rate']`` for warmup + duration seconds; returns latency stats."""
    host, port = spec["host"], int(spec["port"])
    body = spec["body"].encode()
    head = (
        f"POST {spec['path']} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {spec['api_key']}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    request = head + body
    check = spec.get("check", "").encode() or None
    rate, duration, warmup = float(spec["rate"]), float(spec["duration_s"]), float(spec["warmup_s"])
    loop = asyncio.get_running_loop()

    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(int(spec["connections"])):
        pool.put_nowait(await asyncio.open_connection(host, port))

    lat: list[float] = []
    lat_sched: list[float] = []
    timeline: list[tuple[float, float]] = []  # (send time, latency) of measured requests, ok or not
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    failures: list[str] = []
    errors = 0
    first_send: float | None = None
    last_done = 0.0
    version_re = re.compile(rb'"policy_version":"([^"]*)"')

    async def one(t_sched: float, record: bool) -> None:
        nonlocal errors, first_send, last_done
        reader, writer = await pool.get()
        t0 = time.perf_counter()
        ok = False
        status = 0
        keep = True
        try:
            writer.write(request)
            resp_head = await reader.readuntil(b"\r\n\r\n")
            status = int(resp_head[9:12])
            low = resp_head.lower()
            i = low.find(b"content-length:")
            n = int(low[i + 15 : low.index(b"\r\n", i)])
            payload = await reader.readexactly(n)
            keep = b"connection: close" not in low
            ok = status == 200 and (check is None or check in payload)
            if record and check is not None:
                m = version_re.search(payload)
                if m:
                    versions[m.group(1).decode()] += 1
            if record and not ok and len(failures) < 5:
                failures.append(f"{status}: {payload[:200]!r}")
        except Exception as exc:  # connection reset, malformed response: an error, then a fresh connection
            keep = False
            if record and len(failures) < 5:
                failures.append(repr(exc))
        t1 = time.perf_counter()
        if keep:
            pool.put_nowait((reader, writer))
        else:
            writer.close()
            pool.put_nowait(await asyncio.open_connection(host, port))
        if record:
            if first_send is None or t0 < first_send:
                first_send = t0
            last_done = max(last_done, t1)
            statuses[status] += 1
            if spec.get("timeline"):
                timeline.append((t0, t1 - t0 if ok else math.inf))
            if ok:
                lat.append(t1 - t0)
                lat_sched.append(t1 - t_sched)
            else:
                errors += 1

    n_warm = int(rate * warmup)
    n_total = n_warm + int(rate * duration)
    tasks = []
    start_loop = loop.time()
    start_perf = time.perf_counter()
    for i in range(n_total):
        offset = i / rate
        delay = start_loop + offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(start_perf + offset, i >= n_warm)))
    await asyncio.gather(*tasks)
    send_lag_s = time.perf_counter() - start_perf - (n_total - 1) / rate  # how late the schedule finished
    while not pool.empty():
        _, w = pool.get_nowait()
        w.close()

    lat.sort()
    lat_sched.sort()
    measured = n_total - n_warm
    elapsed = (last_done - first_send) if first_send is not None else float("nan")
    ms = 1e3
    return {
        "target_rps": rate,
        "sent": measured,
        "ok": len(lat),
        "errors": errors,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "achieved_rps": (measured / elapsed) if elapsed and elapsed > 0 else float("nan"),
        "p50_ms": _percentile(lat, 50) * ms,
        "p90_ms": _percentile(lat, 90) * ms,
        "p99_ms": _percentile(lat, 99) * ms,
        "p999_ms": _percentile(lat, 99.9) * ms,
        "max_ms": (lat[-1] * ms) if lat else float("nan"),
        "mean_ms": (sum(lat) / len(lat) * ms) if lat else float("nan"),
        "sched_p50_ms": _percentile(lat_sched, 50) * ms,
        "sched_p99_ms": _percentile(lat_sched, 99) * ms,
        "schedule_lag_ms": send_lag_s * ms,
        "versions": dict(versions),
        "failures": failures,
        **({"timeline": timeline} if spec.get("timeline") else {}),
    }


#: Seconds after each reload's start whose requests are summarized (issue 14's "worst half-second").
RELOAD_WINDOW_S = 0.5


def _reload_windows(timeline: list[tuple[float, float]], reloads: list[dict[str, Any]]) -> dict[str, float]:
    """Latency of the requests sent within ``RELOAD_WINDOW_S`` of each reload's start; the worst window."""
    worst = {"window_p50_ms": 0.0, "window_p99_ms": 0.0, "window_max_ms": 0.0, "window_requests": 0}
    for r in reloads:
        t0 = r["t_start"]
        lat = sorted(x for t, x in timeline if t0 <= t < t0 + RELOAD_WINDOW_S)
        if not lat:
            continue
        p50, p99 = _percentile(lat, 50) * 1e3, _percentile(lat, 99) * 1e3
        if p99 > worst["window_p99_ms"]:
            worst = {"window_p50_ms": p50, "window_p99_ms": p99, "window_max_ms": lat[-1] * 1e3,
                     "window_requests": len(lat)}  # fmt: skip
    return worst


def _run_loadgen_process(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the load generator in its own process and return its JSON result."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.service", "--loadgen", json.dumps(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=spec["warmup_s"] + spec["duration_s"] + 120,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _loadgen_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is installed with uvicorn[standard]
        pass
    print(json.dumps(asyncio.run(_loadgen(spec))))
    return 0


# ---------------------------------------------------------------------------------------------- orchestration


def _decide_body(policy: str) -> str:
    setting = {"rank": 8, "bits": 4, "gamma": 0.0}
    history = [
        {
            "step": 50 * (i + 1),
            "loss": 3.0 - 0.05 * i,
            "loss_std": 0.1,
            "grad_norm": 1.5,
            "compression_error": 0.02,
            "grad_kurtosis": 3.0,
            "spectral_tail": 0.1,
            "state_bytes": 4_000_000,
            "peak_memory_bytes": 60_000_000,
            "energy_j": 50.0,
            "mean_power_w": 25.0,
            "interval_s": 2.0,
            "lr": 3e-4,
            "setting": setting,
            "progress": 0.1 + 0.01 * i,
        }
        for i in range(8)
    ]
    return json.dumps(
        {
            "job_id": "bench-job",
            "policy": policy,
            "objective": {"w_loss": 1.0, "w_memory": 0.3, "w_energy": 0.2},
            "history": history,
            "reference": {"initial_loss": 3.0, "dense_state_bytes": 16_000_000},
            # a job's hook sends its cost profile with every window (profile="auto"): this CPU's lm-tiny one
            "profile": json.loads((PROFILE_DIR / "cpu-lm-tiny.json").read_text()),
        },
        separators=(",", ":"),
    )


def _machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    import uvicorn

    info: dict[str, Any] = {
        "cpu": model or platform.processor(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "uvicorn": uvicorn.__version__,
    }
    for mod in ("uvloop", "httptools"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            info[mod] = None
    return info


def _server(policy_dir: Path, log_path: Path) -> ServiceProcess:
    """``mango serve`` with the bench endpoints on and one TinyFormer artifact (not started)."""
    env = {
        "MANGO_POLICY_DIR": str(policy_dir),
        "MANGO_DEFAULT_POLICY_DIR": "",
        "MANGO_BENCH_ENDPOINTS": "true",
        "MANGO_LOG_LEVEL": "warning",
    }
    return ServiceProcess(log_path, env=env)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return math.nan


def _server_time(server: ServiceProcess, route: str) -> tuple[float, float]:
    """(sum seconds, count) of the server's own latency histogram for ``route`` (from ``/metrics``)."""
    import httpx

    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    total = count = 0.0
    for line in text.splitlines():
        if f'route="{route}"' not in line:
            continue
        if line.startswith("mango_http_request_duration_seconds_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("mango_http_request_duration_seconds_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


def _export(policy_dir: Path, version: str, seed: int) -> None:
    import torch

    from agents.tinyformer import TinyFormer
    from client.policy import export_artifact

    torch.manual_seed(seed)
    model = TinyFormer()
    export_artifact(
        model.weights(),
        model.config,
        policy_dir,
        name="bench-tiny",
        version=version,
        training_command="benchmarks: random init",
    )


def _spec(
    server: ServiceProcess, endpoint: str, rate: int, cfg: BenchConfig, duration_s: float
) -> dict[str, Any]:
    policy = {"empty": "default", "decide-static": "static", "decide-tinyformer": "bench-tiny"}[endpoint]
    return {
        "host": "127.0.0.1",
        "port": server.port,
        "path": "/bench/empty" if endpoint == "empty" else "/v1/decide",
        "body": _decide_body(policy),
        "api_key": server.api_key,
        "check": "" if endpoint == "empty" else '"setting"',
        "rate": rate,
        "duration_s": duration_s,
        "warmup_s": cfg.warmup_s,
        "connections": cfg.connections,
    }


def _reload_phase(server: ServiceProcess, policy_dir: Path, cfg: BenchConfig) -> dict[str, Any]:
    """Load at ``reload_rate`` in the generator while this thread re-exports and reloads ``reloads`` times."""
    import httpx

    duration = max(cfg.duration_s, 0.5 * cfg.reloads)
    spec = {**_spec(server, "decide-tinyformer", cfg.reload_rate, cfg, duration), "timeline": True}
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(_run_loadgen_process(spec)))
    runner.start()
    time.sleep(cfg.warmup_s + 1.0)  # the generator starts (imports) and warms up first
    gap = duration / (cfg.reloads + 1)
    reloads: list[dict[str, Any]] = []
    with httpx.Client(base_url=server.url, headers={"X-API-Key": server.admin_key}, timeout=60) as admin:
        for i in range(cfg.reloads):
            _export(policy_dir, version=f"reload-{i}", seed=100 + i)
            t0 = time.perf_counter()
            r = admin.post("/v1/policies/reload", params={"force": "true"})
            reloads.append(
                {
                    "t_start": t0,  # perf_counter is CLOCK_MONOTONIC: comparable with the generator's
                    "status": r.status_code,
                    "wall_ms": (time.perf_counter() - t0) * 1e3,
                    "version": r.json().get("learned", {}).get("bench-tiny")
                    if r.status_code == 200
                    else None,
                    "errors": r.json().get("errors") if r.status_code == 200 else r.text,
                }
            )
            time.sleep(gap * 0.8)
    runner.join()
    result.update(_reload_windows(result.pop("timeline", []), reloads))
    result["reloads"] = reloads
    result["reload_failures"] = sum(1 for r in reloads if r["status"] != 200 or r["errors"])
    return result


#: How often the cold-start launches ask ``/readyz`` (the resolution of the measurement).
COLD_START_POLL_S = 0.01


def _cold_starts(policy_dir: Path, log_dir: Path, n: int) -> dict[str, Any]:
    """Launch the server ``n`` times: seconds from spawn to the first 200 of ``/readyz``, its ``reloader``,
    and seconds of each stop (SIGTERM until the process group is empty, as ``ServiceProcess.stop``)."""
    times: list[float] = []
    stops: list[float] = []
    reloader: Counter[str] = Counter()
    for i in range(n):
        server = _server(policy_dir, log_dir / f"cold-{i}.log")
        try:
            server.start(poll_s=COLD_START_POLL_S, attempts=1)
            assert server.ready_after_s is not None and server.ready_body is not None
            times.append(server.ready_after_s)
            reloader[str(server.ready_body.get("reloader"))] += 1
            t0 = time.perf_counter()
            server.stop()
            stops.append(time.perf_counter() - t0)
        finally:
            server.close()
    ordered = sorted(times)
    return {
        "launches": n,
        "seconds": times,
        "median_s": statistics.median(ordered),
        "min_s": ordered[0],
        "max_s": ordered[-1],
        "reloader_at_ready": dict(reloader),
        "stop_median_s": statistics.median(stops),
    }


def _cold_line(cold: dict[str, Any]) -> str:
    states = ", ".join(f"{k} x{v}" for k, v in sorted(cold["reloader_at_ready"].items()))
    verdict = "met" if cold["median_s"] <= 2.0 else "MISSED"
    return (
        f"cold start (spawn -> first 200 of /readyz), median of {cold['launches']} launches: "
        f"{cold['median_s']:.2f} s (min {cold['min_s']:.2f}, max {cold['max_s']:.2f}); hot-reload worker at "
        f"readiness: {states}; goal <= 2 s ({verdict}); stop (SIGTERM -> process group empty), median "
        f"{cold['stop_median_s']:.2f} s"
    )


def _fmt(x: float) -> str:
    return f"{x:.3f}" if x == x else "nan"


def _table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| endpoint | target req/s | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms "
        "| p99 from schedule ms | mean ms | in-server mean ms | server CPU us/req | errors / sent |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        lines.append(
            f"| {r['endpoint']} | {r['target_rps']:.0f} | {r['achieved_rps']:.1f} | {_fmt(r['p50_ms'])} | "
            f"{_fmt(r['p90_ms'])} | {_fmt(r['p99_ms'])} | {_fmt(r['p999_ms'])} | {_fmt(r['max_ms'])} | "
            f"{_fmt(r['sched_p99_ms'])} | {_fmt(r['mean_ms'])} | {_fmt(r.get('server_mean_ms', math.nan))} | "
            f"{r.get('server_cpu_us_per_req', math.nan):.0f} | {r['errors']} / {r['sent']} |"
        )
    return "\n".join(lines)


def _summarize(
    rows: list[dict[str, Any]], reload_res: dict[str, Any] | None, cfg: BenchConfig
) -> tuple[dict[str, dict[str, float]], list[str], list[str]]:
    """p50 ratios against the empty endpoint, their printable lines, and the goal checks."""
    by = {(r["endpoint"], int(r["target_rps"])): r for r in rows}
    ratios: dict[str, dict[str, float]] = {}
    for rate in cfg.rates:
        empty = by.get(("empty", rate))
        for ep in ("decide-static", "decide-tinyformer"):
            if empty and (ep, rate) in by:
                ratios.setdefault(ep, {})[str(rate)] = by[(ep, rate)]["p50_ms"] / empty["p50_ms"]
    lines = [
        f"- {ep}: " + ", ".join(f"{r} req/s {v:.2f}x" for r, v in per.items()) for ep, per in ratios.items()
    ]
    cpu = {
        ep: [by[(ep, r)].get("server_cpu_us_per_req", math.nan) for r in cfg.rates if (ep, r) in by]
        for ep in ("empty", "decide-static", "decide-tinyformer")
    }
    med = {ep: sorted(v)[len(v) // 2] for ep, v in cpu.items() if v}
    if "empty" in med:
        lines.append(
            "- server CPU per request (median over rates): "
            + ", ".join(f"{ep} {us:.0f} us ({us / med['empty']:.2f}x empty)" for ep, us in med.items())
        )
    goals = []
    for ep, per in ratios.items():
        worst = max(per.values())
        verdict = "met" if worst <= 1.3 else "MISSED"
        goals.append(f"{ep} p50 / empty p50 <= 1.3 at every rate: worst {worst:.2f} ({verdict})")
    top = max(cfg.rates)
    for ep in ("decide-static", "decide-tinyformer"):
        r = by.get((ep, top))
        if r:
            verdict = "met" if r["p99_ms"] <= 3.0 and r["errors"] == 0 else "MISSED"
            goals.append(
                f"{ep} p99 <= 3 ms with zero errors at {top} req/s: p99 {r['p99_ms']:.3f} ms, "
                f"errors {r['errors']} ({verdict})"
            )
    if reload_res is not None:
        failed = reload_res["errors"] + reload_res["reload_failures"]
        goals.append(
            f"hot reload x{len(reload_res['reloads'])} at {cfg.reload_rate} req/s: failed requests "
            f"{reload_res['errors']}, failed reloads {reload_res['reload_failures']}, "
            f"p99 {reload_res['p99_ms']:.3f} ms (worst {RELOAD_WINDOW_S:g} s after a reload: p50 "
            f"{reload_res['window_p50_ms']:.3f} ms, p99 {reload_res['window_p99_ms']:.3f} ms), "
            f"policy versions served {len(reload_res['versions'])} "
            f"({'met' if failed == 0 else 'MISSED'})"
        )
    return ratios, lines, goals


def _load_phases(
    policy_dir: Path, tmp: Path, cfg: BenchConfig
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str]:
    """One server under open-loop load at each rate and endpoint, then the reload phase.

    :returns: the rows, the reload phase's result (``None`` without reloads) and the server log's tail.
    """
    rows: list[dict[str, Any]] = []
    server = _server(policy_dir, tmp / "server.log")
    try:
        server.start()
        assert server.pid is not None
        # warm every path once (first requests build caches) before anything is measured
        for endpoint in cfg.endpoints:
            _run_loadgen_process(_spec(server, endpoint, 200, cfg, 0.5))
        for rate in cfg.rates:
            for endpoint in cfg.endpoints:
                route = "/bench/empty" if endpoint == "empty" else "/v1/decide"
                before, cpu0 = _server_time(server, route), _cpu_s(server.pid)
                res = _run_loadgen_process(_spec(server, endpoint, rate, cfg, cfg.duration_s))
                cpu1, after = _cpu_s(server.pid), _server_time(server, route)
                n = after[1] - before[1]
                # in-server time (middleware to last byte) and server CPU, warm-up requests included
                res["server_mean_ms"] = (after[0] - before[0]) / n * 1e3 if n else math.nan
                res["server_cpu_us_per_req"] = (cpu1 - cpu0) / n * 1e6 if n else math.nan
                res["endpoint"] = endpoint
                res["loadavg_1m"] = os.getloadavg()[0]
                rows.append(res)
                p50, p99 = res["p50_ms"], res["p99_ms"]
                print(
                    f"  {endpoint:<18} {rate:>4} req/s: p50 {p50:.3f} ms, p99 {p99:.3f} ms, "
                    f"errors {res['errors']}/{res['sent']}",
                    flush=True,
                )
        reload_res = _reload_phase(server, policy_dir, cfg) if cfg.reloads > 0 else None
    finally:
        server.stop()
        server_log = (tmp / "server.log").read_text(errors="replace")[-4000:]
    return rows, reload_res, server_log


@dataclass
class ServiceBenchArgs:
    """Latency and throughput of the policy service under open-loop load on loopback."""

    rates: str = "100,250,500"
    """comma-separated target rates, requests per second"""
    duration: float = 6.0
    """measured seconds per rate and endpoint"""
    warmup: float = 1.0
    """unmeasured seconds before each measurement"""
    connections: int = 32
    """load generator keep-alive connections"""
    reloads: int = 10
    """hot reloads during the reload phase (0: skip the phase)"""
    reload_rate: int = 500
    """request rate during the reload phase"""
    endpoints: str = "empty,decide-static,decide-tinyformer"
    """comma-separated endpoints to measure"""
    out_dir: Path = ROOT / "results"
    """where the JSON result goes"""
    append: bool = True
    """append a dated section to BENCHMARKS.md (--no-append: do not)"""
    cold_starts: int = 5
    """launches timed from spawn to the first 200 of /readyz (the cold start; 0: skip)"""
    load: bool = True
    """run the load phases (--no-load: the cold start only)"""

    def config(self) -> BenchConfig:
        return BenchConfig(
            rates=tuple(int(x) for x in self.rates.split(",") if x),
            duration_s=self.duration,
            warmup_s=self.warmup,
            connections=self.connections,
            reloads=self.reloads,
            reload_rate=self.reload_rate,
            endpoints=tuple(e for e in self.endpoints.split(",") if e),
            out_dir=self.out_dir,
            append=self.append,
            cold_starts=self.cold_starts,
            load=self.load,
        )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--loadgen"]:
        return _loadgen_main(argv[1])
    cfg = tyro.cli(
        ServiceBenchArgs, args=argv, prog="mango bench service", description=ServiceBenchArgs.__doc__
    ).config()
    command = "mango bench service " + shlex.join(argv) if argv else "mango bench service"
    started = datetime.now(UTC)
    machine = _machine()
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    reload_res: dict[str, Any] | None = None
    cold: dict[str, Any] | None = None
    server_log = ""
    with tempfile.TemporaryDirectory(prefix="mango-bench-") as tmp:
        policy_dir = Path(tmp) / "policies"
        _export(policy_dir, version="v0", seed=0)
        if cfg.cold_starts > 0:  # first, while nothing of ours runs
            cold = _cold_starts(policy_dir, Path(tmp), cfg.cold_starts)
            print("  " + _cold_line(cold), flush=True)
        if cfg.load:
            rows, reload_res, server_log = _load_phases(policy_dir, Path(tmp), cfg)
    load_after = os.getloadavg()

    table = _table(rows) if rows else ""
    ratios, ratio_lines, goals = _summarize(rows, reload_res, cfg)
    if cold is not None:
        goals.insert(0, _cold_line(cold))
    if rows:
        print()
        print(table)
        print("\ndecide p50 / empty p50:\n" + "\n".join(ratio_lines))
    if reload_res is not None:
        rr = reload_res
        walls = sorted(r["wall_ms"] for r in rr["reloads"])
        print(
            f"\nreload phase: {rr['sent']} requests at {cfg.reload_rate} req/s, {rr['errors']} failed, "
            f"p50 {rr['p50_ms']:.3f} ms, p99 {rr['p99_ms']:.3f} ms, max {rr['max_ms']:.3f} ms; "
            f"{len(walls)} reloads, median {walls[len(walls) // 2]:.0f} ms each"
        )
    print("\ngoals:\n" + "\n".join(f"- {g}" for g in goals))
    cpus = machine["cpus"]
    print(f"\nload average 1m before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on {cpus} CPUs")

    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    out = cfg.out_dir / f"service-{stamp}.json"
    payload = {
        "command": command,
        "started_utc": started.isoformat(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "machine": machine,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "rows": rows,
        "ratios_p50_vs_empty": ratios,
        "reload_phase": reload_res,
        "cold_start": cold,
        "goals": goals,
        "server_log_tail": server_log,
    }
    out.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {out}")

    if cfg.append:
        m = machine
        body = [table, "", "decide p50 / empty p50:", *ratio_lines, ""] if rows else []
        md = append_section(
            "Policy service under load (`mango bench service`)" if rows else "Policy service cold start",
            command,
            "\n".join([*body, "Goals:", *[f"- {g}" for g in goals]]),
            machine=f"{m['cpu']}, {m['cpus']} CPUs (shared; load average 1m {load_before[0]:.2f} before, "
            f"{load_after[0]:.2f} after), {m['platform']}",
            details=[
                f"software: Python {m['python']}, torch {m['torch']}, uvicorn {m['uvicorn']}, "
                f"uvloop {m['uvloop']}, httptools {m['httptools']}",
                "server: `mango serve`, 1 uvicorn worker, loopback; load: a separate asyncio process, "
                f"open loop, {cfg.connections} keep-alive connections, {cfg.duration_s:g} s measured per "
                f"row after {cfg.warmup_s:g} s warm-up; latency = write of the request to last byte of the "
                "response",
                f"result JSON: `{out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}`",
            ],
            when=started,
            path=cfg.benchmarks_md,
        )
        print(f"appended to {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
