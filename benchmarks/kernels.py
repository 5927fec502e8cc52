"""`mango bench kernels`: Triton quantize / dequantize against the device's copy bandwidth (and bitsandbytes).

For each size, input dtype and ``(bits, mode)`` it times the fused quantize kernel (scale + code + pack) and
the dequantize kernel (unpack + scale) with ``triton.testing.do_bench`` (median, L2 flushed before each
call), counts the bytes each must move (input read once, codes and scales written once, and the reverse),
and reports time, effective bandwidth and its fraction of a device-to-device copy measured in the same run,
plus the relative error ``||dequantize(quantize(x)) - x|| / ||x||`` on Gaussian data. Where bitsandbytes
imports, its ``quantize_blockwise`` (8 bits, same block) and ``quantize_4bit`` (NF4, block 64) run on the same
tensors; a peer that fails becomes an error row, never a crash.

On a machine without CUDA it says so and times only the torch path on a small tensor.

Usage::

    python -m mango_cli bench kernels                       # 16M, 64M, 256M values; fp32 and bf16
    python -m mango_cli bench kernels --sizes-m 16 --dtypes fp32 --configs 4:nf4,8:uniform
    python -m mango_cli bench kernels --tiles 2048,4096 --num-warps 4,8   # tuning sweep

Output: a table on stdout, raw rows as JSON (``--out``, default ``results/kernels-<date>.json``) and, on CUDA,
the table with its command, machine and date appended to ``BENCHMARKS.md`` (``--no-append`` to skip).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import platform
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import tyro

from benchmarks.common import append_section

__all__ = ["KernelBenchArgs", "main"]

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_DEFAULT_CONFIGS = "2:uniform,3:uniform,4:uniform,8:uniform,4:nf4,2:aciq,3:aciq,4:aciq"


@dataclass
class KernelBenchArgs:
    """Knobs of the kernel benchmark (parsed once from the command line)."""

    sizes_m: list[int] = field(default_factory=lambda: [16, 64, 256])
    """tensor sizes in millions of values (x 2^20)"""
    dtypes: list[str] = field(default_factory=lambda: ["fp32", "bf16"])
    """input dtypes (dequantize writes the same dtype)"""
    configs: list[tuple[int, str]] = field(default_factory=list)
    """(bits, mode) pairs, written bits:mode"""
    stochastic: list[bool] = field(default_factory=lambda: [False, True])
    """rounding modes to time"""
    tiles: list[int | None] = field(default_factory=lambda: [None])
    """values per program to sweep (None: the kernels' defaults)"""
    num_warps: list[int] = field(default_factory=lambda: [4])
    """warps per program to sweep"""
    rep_ms: int = 100
    """do_bench repetition budget per measurement, ms"""
    bnb: bool = True
    """also time bitsandbytes where it imports"""
    out: str = ""
    """JSON output path (default results/kernels-<date>.json)"""
    append: bool = True
    """append the table to BENCHMARKS.md (CUDA runs only)"""
    markdown: str = "BENCHMARKS.md"
    """file the table is appended to"""


@dataclass
class KernelFlags:
    """Quantize / dequantize / pack kernels against torch and bitsandbytes (GPU; the torch path elsewhere)."""

    sizes_m: str = "16,64,256"
    """sizes in Mi values, comma separated"""
    dtypes: str = "fp32,bf16"
    """fp32, bf16, fp16; comma separated"""
    configs: str = _DEFAULT_CONFIGS
    """bits:mode pairs, comma separated"""
    stochastic: str = "0,1"
    """0 (round to nearest), 1 (stochastic); comma separated"""
    tiles: str = ""
    """values per program to sweep, e.g. 2048,4096 ('': the kernels' defaults)"""
    num_warps: str = "4"
    """warps per program to sweep, e.g. 4,8"""
    rep_ms: int = 100
    """do_bench repetition budget per measurement, ms"""
    bnb: bool = True
    """also time bitsandbytes where it imports (--no-bnb: skip it)"""
    out: str = ""
    """JSON path (default results/kernels-<date>.json)"""
    append: bool = True
    """append the table to BENCHMARKS.md (CUDA runs only; --no-append: do not)"""
    markdown: str = "BENCHMARKS.md"
    """markdown file to append to"""


def _parse(argv: list[str]) -> KernelBenchArgs:
    a = tyro.cli(KernelFlags, args=argv, prog="mango bench kernels", description=KernelFlags.__doc__)

    def ints(s: str) -> list[int]:
        return [int(v) for v in s.split(",") if v.strip()]

    configs = []
    for item in a.configs.split(","):
        bits, _, mode = item.strip().partition(":")
        configs.append((int(bits), mode or "uniform"))
    for d in a.dtypes.split(","):
        if d not in _DTYPES:
            print(
                f"mango bench kernels: error: unknown dtype {d!r}; choose from {list(_DTYPES)}",
                file=sys.stderr,
            )
            raise SystemExit(2)
    return KernelBenchArgs(
        sizes_m=ints(a.sizes_m),
        dtypes=a.dtypes.split(","),
        configs=configs,
        stochastic=[bool(v) for v in ints(a.stochastic)],
        tiles=list(ints(a.tiles)) or [None],
        num_warps=ints(a.num_warps),
        rep_ms=a.rep_ms,
        bnb=a.bnb,
        out=a.out,
        append=a.append,
        markdown=a.markdown,
    )


def _rel_err(y: torch.Tensor, x: torch.Tensor) -> float:
    x32 = x.float()
    return float((y.float() - x32).norm() / x32.norm().clamp_min(1e-30))


def _bench_ms(fn: Callable[[], Any], rep_ms: int) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=25, rep=rep_ms, return_mode="median"))


def _copy_bandwidth_gbs(n: int, rep_ms: int) -> float:
    """Device-to-device copy of ``n`` float32 values: (bytes read + written) / time, GB/s."""
    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    ms = _bench_ms(lambda: dst.copy_(src), rep_ms)
    return 2 * n * 4 / ms / 1e6


def _row(kind: str, impl: str, **kw: Any) -> dict[str, Any]:
    row = {"kind": kind, "impl": impl, **kw}
    if row.get("ms") and "bytes" in row:
        row["gbs"] = row["bytes"] / row["ms"] / 1e6  # bytes / ms -> GB/s
    return row


def _mango_rows(
    x: torch.Tensor,
    bits: int,
    mode: str,
    stochastic: bool,
    tile: int | None,
    warps: int,
    args: KernelBenchArgs,
) -> list[dict[str, Any]]:
    from client.compression import kernels
    from client.compression.codes import default_block

    n, block = x.numel(), default_block(bits)
    common = dict(
        n=n, dtype=str(x.dtype).replace("torch.", ""), bits=bits, mode=mode, block=block,
        stochastic=stochastic, tile=tile, num_warps=warps,
    )  # fmt: skip
    seed = [1]

    def q() -> tuple[torch.Tensor, torch.Tensor]:
        seed[0] += 1
        return kernels.quantize(x, bits, mode, block, stochastic, seed[0], tile=tile, num_warps=warps)

    data, scale = q()
    code_bytes = data.numel() + 4 * scale.numel()
    ms_q = _bench_ms(q, args.rep_ms)

    def d() -> torch.Tensor:
        return kernels.dequantize(data, scale, bits, mode, block, n, x.dtype, tile=tile, num_warps=warps)

    y = d()
    ms_d = _bench_ms(d, args.rep_ms)
    err = _rel_err(y, x)
    item = x.element_size()
    return [
        _row("quantize", "mango", **common, ms=ms_q, bytes=n * item + code_bytes, rel_err=err),
        _row("dequantize", "mango", **common, ms=ms_d, bytes=code_bytes + n * item, rel_err=err),
    ]


def _bnb_rows(x: torch.Tensor, args: KernelBenchArgs) -> list[dict[str, Any]]:
    """bitsandbytes blockwise 8-bit (block 256, its dynamic code) and NF4 (block 64) on the same tensor."""
    rows: list[dict[str, Any]] = []
    common = dict(n=x.numel(), dtype=str(x.dtype).replace("torch.", ""), stochastic=False)
    try:
        import bitsandbytes.functional as F
    except Exception as exc:
        return [_row("quantize", "bitsandbytes", **common, error=f"import failed: {exc}")]
    item = x.element_size()
    n = x.numel()
    cases: list[tuple[str, int, int, Callable[[], Any], Callable[[Any], torch.Tensor]]] = [
        (
            "uniform(bnb dynamic)",
            8,
            256,
            lambda: F.quantize_blockwise(x, blocksize=256),
            lambda qs: F.dequantize_blockwise(qs[0], qs[1]),
        ),
        (
            "nf4",
            4,
            64,
            lambda: F.quantize_4bit(x, blocksize=64, quant_type="nf4"),
            lambda qs: F.dequantize_4bit(qs[0], qs[1], quant_type="nf4"),
        ),
    ]
    for mode, bits, block, quant, dequant in cases:
        meta = dict(common, bits=bits, mode=mode, block=block)
        try:
            qs = quant()
            code_bytes = n * bits // 8 + 4 * (-(-n // block))
            ms_q = _bench_ms(quant, args.rep_ms)
            y = dequant(qs)
            ms_d = _bench_ms(functools.partial(dequant, qs), args.rep_ms)
            err = _rel_err(y, x)
            rows.append(
                _row("quantize", "bitsandbytes", **meta, ms=ms_q, bytes=n * item + code_bytes, rel_err=err)
            )
            rows.append(
                _row("dequantize", "bitsandbytes", **meta, ms=ms_d, bytes=code_bytes + n * item, rel_err=err)
            )
        except Exception as exc:  # a failing peer is a row, not a crash
            rows.append(_row("quantize", "bitsandbytes", **meta, error=f"{type(exc).__name__}: {exc}"))
    return rows


def _format(rows: list[dict[str, Any]], copy_gbs: float | None) -> str:
    cols = [
        "kind",
        "impl",
        "n",
        "dtype",
        "bits",
        "mode",
        "st",
        "tile",
        "warps",
        "ms",
        "GB/s",
        "%copy",
        "rel_err",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if "error" in r:
            cells = [
                r["kind"],
                r["impl"],
                r.get("n", ""),
                r.get("dtype", ""),
                r.get("bits", ""),
                r.get("mode", ""),
            ]
            lines.append("| " + " | ".join(map(str, cells)) + f" | error: {r['error'][:80]} |")
            continue
        gbs = r.get("gbs")
        cells = [
            r["kind"],
            r["impl"],
            f"{r['n'] / 2**20:.0f}M",
            r["dtype"],
            r["bits"],
            r["mode"],
            "y" if r.get("stochastic") else "n",
            r.get("tile") or "-",
            r.get("num_warps") or "-",
            f"{r['ms']:.4f}",
            f"{gbs:.0f}" if gbs is not None else "-",
            f"{100 * gbs / copy_gbs:.0f}" if gbs is not None and copy_gbs else "-",
            f"{r['rel_err']:.3g}" if r.get("rel_err") is not None else "-",
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def _cpu_run(args: KernelBenchArgs) -> list[dict[str, Any]]:
    """No CUDA: time the torch path on 1 Mi values (one repetition after a warm-up)."""
    from client.compression.codes import default_block
    from client.compression.quant import dequantize_torch, quantize_torch

    rows = []
    n = 1 << 20
    for dname in args.dtypes:
        x = torch.randn(n, dtype=_DTYPES[dname])
        for bits, mode in args.configs:
            for stochastic in args.stochastic:
                try:
                    q = quantize_torch(x, bits, mode=mode, stochastic=stochastic)
                    t0 = time.perf_counter()
                    q = quantize_torch(x, bits, mode=mode, stochastic=stochastic)
                    t1 = time.perf_counter()
                    y = dequantize_torch(q)
                    t2 = time.perf_counter()
                    meta = dict(n=n, dtype=dname, bits=bits, mode=mode, block=default_block(bits))
                    meta["stochastic"] = stochastic
                    err = _rel_err(y, x)
                    rows.append(_row("quantize", "torch-cpu", **meta, ms=1e3 * (t1 - t0), rel_err=err))
                    rows.append(_row("dequantize", "torch-cpu", **meta, ms=1e3 * (t2 - t1), rel_err=err))
                except Exception as exc:
                    rows.append(
                        _row("quantize", "torch-cpu", n=n, dtype=dname, bits=bits, mode=mode, error=str(exc))
                    )
    return rows


def _machine() -> dict[str, Any]:
    meta: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "host": platform.node(),
    }
    try:
        import triton

        meta["triton"] = triton.__version__
    except Exception:
        meta["triton"] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        meta.update(gpu=props.name, sms=props.multi_processor_count, gpu_mem_gib=props.total_memory / 2**30)
    else:
        meta.update(gpu=None, cpu=platform.processor() or platform.machine())
    return meta


def main(argv: list[str]) -> int:
    args = _parse(argv)
    command = shlex.join(["mango", "bench", "kernels", *argv])
    date = dt.datetime.now().strftime("%Y-%m-%d")
    out = Path(args.out or f"results/kernels-{date}.json")
    meta = {"command": command, "date": dt.datetime.now().isoformat(timespec="seconds"), **_machine()}
    meta["args"] = asdict(args)
    rows: list[dict[str, Any]] = []
    copy_gbs = None

    if not torch.cuda.is_available():
        print(
            "No CUDA device: the Triton kernels are timed on GPUs only. Timing the torch path on CPU at 1 Mi"
        )
        print("values instead (one repetition; for orientation, not comparison).")
        rows = _cpu_run(args)
    else:
        from client.compression import kernels

        if not kernels.available():
            print("CUDA is present but triton is not importable: nothing to time.")
            return 1
        copy_gbs = _copy_bandwidth_gbs(max(args.sizes_m) << 20, args.rep_ms)
        meta["copy_gbs"] = copy_gbs
        print(f"device copy bandwidth (read + write): {copy_gbs:.0f} GB/s", flush=True)
        for size_m in args.sizes_m:
            n = size_m << 20
            for dname in args.dtypes:
                torch.manual_seed(0)
                x = torch.randn(n, device="cuda", dtype=_DTYPES[dname])
                for bits, mode in args.configs:
                    for stochastic in args.stochastic:
                        for tile in args.tiles:
                            for warps in args.num_warps:
                                try:
                                    rows += _mango_rows(x, bits, mode, stochastic, tile, warps, args)
                                except Exception as exc:
                                    traceback.print_exc()
                                    rows.append(
                                        _row("quantize", "mango", n=n, dtype=dname, bits=bits, mode=mode,
                                             stochastic=stochastic, error=f"{type(exc).__name__}: {exc}")
                                    )  # fmt: skip
                                print(_format(rows[-2:], copy_gbs).splitlines()[-1], flush=True)
                if args.bnb:
                    rows += _bnb_rows(x, args)
                del x
                torch.cuda.empty_cache()
    table = _format(rows, copy_gbs)
    print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    print(f"wrote {out}")
    if copy_gbs is not None and args.append:
        try:
            append_section(
                "Quantization kernels",
                command,
                table,
                machine=str(meta.get("gpu")),
                details=[f"triton {meta['triton']}, torch {meta['torch']}; copy {copy_gbs:.0f} GB/s"],
                path=args.markdown,
            )
        except OSError as exc:
            print(f"could not append to {args.markdown}: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
