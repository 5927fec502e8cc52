"""Recorded traces: the format, the writer and the reader (gzip JSON lines; Parquet is not used because
``pyarrow`` is not a dependency).

A trace file (``*.jsonl.gz``) holds one JSON object per line:

* ``{"type": "header", "format": "mango-traces-v1", "created", "machine", "code_version", "clock",
  "energy_source", "grid", "workloads": {name: {"key", "config", "param_shapes", "dense_state_bytes"}}}``
  - first line; a file may hold several headers (concatenated recordings) and the reader merges them.
* ``{"type": "reference", "workload", "workload_key", "seed", "columns": {...}}`` - the uncompressed run.
* ``{"type": "episode", "workload", "workload_key", "seed", "controller", "objective", "columns": {...},
  "terms": {...}, "rewards": [...], "train_s": [...], "total_s": [...]}`` - one controlled episode; its
  first record is the warm-up interval.

``columns`` is the episode's telemetry in columnar form (one list per :class:`TelemetryRecord` field, the
setting as ``rank`` / ``bits`` / ``gamma`` lists): compact under gzip and directly usable by numpy.
Floats keep full precision so a replay reproduces the recorded observation exactly.

The shipped traces live in ``envs/traces/`` (:data:`TRACES_DIR`); :func:`load_traces` reads every file there.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from client.protocol import DEFAULT_GRID, CompressionSetting, TelemetryRecord

log = logging.getLogger(__name__)

__all__ = [
    "RECORD_FIELDS",
    "TRACES_DIR",
    "TRACE_FORMAT",
    "EpisodeTrace",
    "TraceSet",
    "TraceWriter",
    "columns_to_records",
    "load_traces",
    "records_to_columns",
]

TRACE_FORMAT = "mango-traces-v1"
#: Where the shipped traces live.
TRACES_DIR = Path(__file__).resolve().parent / "traces"
#: TelemetryRecord fields stored as columns (the setting is stored as rank / bits / gamma).
RECORD_FIELDS: tuple[str, ...] = tuple(f for f in TelemetryRecord.model_fields if f != "setting")


def records_to_columns(records: Sequence[TelemetryRecord]) -> dict[str, list[Any]]:
    """Columnar form of a list of records (see the module docstring)."""
    cols: dict[str, list[Any]] = {f: [] for f in RECORD_FIELDS}
    cols.update(rank=[], bits=[], gamma=[])
    for r in records:
        for f in RECORD_FIELDS:
            cols[f].append(getattr(r, f))
        cols["rank"].append(r.setting.rank)
        cols["bits"].append(r.setting.bits)
        cols["gamma"].append(r.setting.gamma)
    return cols


def columns_to_records(cols: dict[str, list[Any]]) -> list[TelemetryRecord]:
    """Inverse of :func:`records_to_columns`."""
    n = len(cols["step"])
    out = []
    for i in range(n):
        kw = {f: cols[f][i] for f in RECORD_FIELDS if f in cols}
        kw["setting"] = CompressionSetting(rank=cols["rank"][i], bits=cols["bits"][i], gamma=cols["gamma"][i])
        out.append(TelemetryRecord(**kw))
    return out


@dataclass
class EpisodeTrace:
    """One recorded episode (or reference run, ``controller == "reference"``) with numpy columns."""

    workload: str
    workload_key: str
    seed: int
    controller: str
    columns: dict[str, np.ndarray]
    objective: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    #: its workload's entry in the header of the file (recording) it came from: the rules it was recorded
    #: under (e.g. ``factor_max_bits``), where :attr:`TraceSet.workloads` keeps the last file's entry
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.columns["step"].shape[0])

    def records(self) -> list[TelemetryRecord]:
        return columns_to_records({k: v.tolist() for k, v in self.columns.items()})

    def actions(self) -> np.ndarray:
        """Grid indices ``[T, 3]`` of the settings in force (nearest gamma)."""
        g = DEFAULT_GRID
        r = np.array([g.ranks.index(int(x)) for x in self.columns["rank"]])
        b = np.array([g.bits.index(int(x)) for x in self.columns["bits"]])
        gam = np.abs(self.columns["gamma"][:, None] - np.asarray(g.gammas)[None, :]).argmin(axis=1)
        return np.stack([r, b, gam], axis=1)


@dataclass
class TraceSet:
    """Everything read from one or more trace files."""

    headers: list[dict[str, Any]]
    workloads: dict[
        str, dict[str, Any]
    ]  # name -> header entry (key, config, param_shapes, dense_state_bytes)
    references: dict[tuple[str, int], EpisodeTrace]
    episodes: list[EpisodeTrace]
    digest: str = ""

    def episodes_of(self, workload: str) -> list[EpisodeTrace]:
        return [e for e in self.episodes if e.workload == workload]

    def seeds_of(self, workload: str) -> list[int]:
        return sorted(s for (w, s) in self.references if w == workload)

    def summary(self) -> str:
        lines = []
        for w in sorted(self.workloads):
            eps = self.episodes_of(w)
            lines.append(
                f"{w}: {len(self.seeds_of(w))} reference seeds, {len(eps)} episodes "
                f"({len({e.controller.split(':')[0] for e in eps})} controller kinds)"
            )
        return "\n".join(lines)


def _np_columns(cols: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in cols.items():
        if k == "energy_source":
            out[k] = np.asarray(v, dtype=object)
        elif k == "progress":
            out[k] = np.asarray([np.nan if x is None else x for x in v], dtype=np.float64)
        elif k in ("energy_coarse",):
            out[k] = np.asarray(v, dtype=bool)
        elif k in ("step", "state_bytes", "peak_memory_bytes", "skipped_steps", "comm_bytes", "rank", "bits"):
            out[k] = np.asarray(v, dtype=np.int64)
        else:
            out[k] = np.asarray(v, dtype=np.float64)
    return out


def _iter_lines(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    for p in paths:
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rt", encoding="utf-8") as f:
            try:
                for line in f:
                    line = line.strip()
                    if line:
                        try:
                            yield json.loads(line)
                        except json.JSONDecodeError:  # a torn last line of an interrupted recording
                            log.warning("%s: skipping a truncated line", p)
            except EOFError:  # still being written (or interrupted): keep what was flushed
                log.warning("%s ends early (recording in progress or interrupted); using what it holds", p)


def trace_files(path: str | Path | None = None) -> list[Path]:
    """Trace files under ``path`` (a file or a directory; default :data:`TRACES_DIR`), sorted."""
    p = Path(path) if path is not None else TRACES_DIR
    if p.is_file():
        return [p]
    return sorted([*p.glob("*.jsonl.gz"), *p.glob("*.jsonl")])


def load_traces(path: str | Path | None = None) -> TraceSet:
    """Read every trace file under ``path`` (default :data:`TRACES_DIR`).

    :raises FileNotFoundError: no trace file there (record some with ``mango record``).
    """
    files = trace_files(path)
    if not files:
        raise FileNotFoundError(
            f"no trace files (*.jsonl.gz) under {path or TRACES_DIR}; record some with `mango record`"
        )
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    headers: list[dict[str, Any]] = []
    workloads: dict[str, dict[str, Any]] = {}
    refs: dict[tuple[str, int], EpisodeTrace] = {}
    eps: list[EpisodeTrace] = []
    current: dict[str, dict[str, Any]] = {}  # the workload entries of the header in force
    for obj in _iter_lines(files):
        kind = obj.get("type")
        if kind == "header":
            if obj.get("format") != TRACE_FORMAT:
                raise ValueError(f"trace format {obj.get('format')!r} is not {TRACE_FORMAT!r}")
            headers.append(obj)
            current = obj.get("workloads", {})
            workloads.update(current)
        elif kind in ("reference", "episode"):
            tr = EpisodeTrace(
                workload=obj["workload"],
                workload_key=obj.get("workload_key", ""),
                seed=int(obj["seed"]),
                controller=obj.get("controller", "reference"),
                columns=_np_columns(obj["columns"]),
                objective=obj.get("objective", {}),
                extra={k: obj[k] for k in ("terms", "rewards", "train_s", "total_s") if k in obj},
                meta=current.get(obj["workload"], {}),
            )
            if kind == "reference":
                refs[(tr.workload, tr.seed)] = tr
            else:
                eps.append(tr)
    return TraceSet(headers, workloads, refs, eps, h.hexdigest()[:16])


class TraceWriter:
    """Append-only writer of one trace file (gzip JSON lines); flushes after every line, so an interrupted
    recording keeps everything written so far."""

    def __init__(self, path: str | Path, header: dict[str, Any]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = gzip.open(self.path, "at", encoding="utf-8", compresslevel=9)  # noqa: SIM115 - closed by close()
        self.write({"type": "header", "format": TRACE_FORMAT, **header})

    def write(self, obj: dict[str, Any]) -> None:
        self._f.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self._f.flush()

    def reference(
        self, workload: str, workload_key: str, seed: int, records: Sequence[TelemetryRecord]
    ) -> None:
        self.write(
            {
                "type": "reference",
                "workload": workload,
                "workload_key": workload_key,
                "seed": seed,
                "columns": records_to_columns(records),
            }
        )

    def episode(
        self,
        workload: str,
        workload_key: str,
        seed: int,
        controller: str,
        objective: dict[str, Any],
        records: Sequence[TelemetryRecord],
        **extra: Any,
    ) -> None:
        self.write(
            {
                "type": "episode",
                "workload": workload,
                "workload_key": workload_key,
                "seed": seed,
                "controller": controller,
                "objective": objective,
                "columns": records_to_columns(records),
                **extra,
            }
        )

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
