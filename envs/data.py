"""Offline datasets for the training backend and the benchmarks: nothing is downloaded, ever.

* :func:`load_corpus` - a byte-level text corpus made of the Python standard library's own ``.py`` files
  (``sysconfig.get_paths()["stdlib"]``), split into train / validation **by file**, cached on disk as uint8
  arrays. :meth:`ByteCorpus.get_batch` samples next-byte prediction batches ``(x, y)``.
* :func:`load_digits_data` - scikit-learn's bundled 8x8 digits (1797 images, 10 classes), a small
  non-language task, split train / validation deterministically.

Determinism: the file list is sorted, the split is a hash of each file's path relative to the stdlib root
(so it does not depend on where Python is installed), and batches come from a caller-supplied
``torch.Generator``. The same Python version gives the same bytes on every machine.

Cache: ``$MANGO_CACHE_DIR`` or ``~/.cache/mango``; entries are keyed by a SHA-256 of the knobs and the
source listing (relative path, size, mtime of every selected file), so an upgraded stdlib or different knobs
build a new entry. Writes are atomic (temp file + rename): concurrent builders are safe.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sysconfig
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import torch

__all__ = [
    "ByteCorpus",
    "DigitsData",
    "Split",
    "cache_dir",
    "get_batch",
    "load_corpus",
    "load_digits_data",
    "split_of",
    "stdlib_files",
]

log = logging.getLogger(__name__)

Split = Literal["train", "val"]
_CACHE_VERSION = "stdlib-bytes-v1"
#: Directory names skipped under the stdlib root: third-party packages and the (huge, repetitive) test suites.
_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})
#: Byte written between two files, so a sample spanning a boundary sees an unambiguous separator.
_SEP = b"\n\x00\n"


def cache_dir() -> Path:
    """Where datasets are cached: ``$MANGO_CACHE_DIR`` if set, else ``~/.cache/mango``."""
    env = os.environ.get("MANGO_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mango"


def stdlib_files(root: Path | None = None) -> list[tuple[str, Path]]:
    """Sorted ``(relative_posix_path, path)`` of the stdlib's ``.py`` files (tests, site-packages skipped)."""
    base = Path(root) if root is not None else Path(sysconfig.get_paths()["stdlib"])
    out: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in filenames:
            if name.endswith(".py"):
                path = Path(dirpath) / name
                out.append((path.relative_to(base).as_posix(), path))
    out.sort(key=lambda t: t[0])
    return out


def split_of(rel_path: str, val_fraction: float) -> Split:
    """The split a file belongs to: a deterministic hash of its relative path (stable across machines)."""
    h = int.from_bytes(hashlib.sha256(rel_path.encode()).digest()[:8], "little")
    return "val" if (h % 10_000) < round(val_fraction * 10_000) else "train"


@dataclass
class ByteCorpus:
    """Train / validation byte streams (uint8, values 0..255) and their file lists.

    :ivar train: uint8 array, the training files concatenated (separated by ``b"\\n\\x00\\n"``).
    :ivar val: uint8 array, the validation files likewise (a disjoint set of files).
    :ivar train_files: relative paths in ``train`` order.
    :ivar val_files: relative paths in ``val`` order.
    :ivar key: the cache key (hex) this corpus was built or loaded under.
    """

    train: np.ndarray
    val: np.ndarray
    train_files: list[str]
    val_files: list[str]
    key: str

    def __post_init__(self) -> None:
        # torch views for fast fancy indexing in get_batch (no copy; the arrays are never written).
        self._t = {
            "train": torch.from_numpy(np.ascontiguousarray(self.train)),
            "val": torch.from_numpy(np.ascontiguousarray(self.val)),
        }

    def data(self, split: Split) -> torch.Tensor:
        """The split as a uint8 tensor (shares memory with the numpy array)."""
        if split not in self._t:
            raise ValueError(f"split={split!r} is unknown; choose 'train' or 'val'")
        return self._t[split]

    def get_batch(
        self,
        split: Split,
        batch_size: int,
        seq_len: int,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows of the split: ``x[b, t]`` is a byte, ``y[b, t] = x[b, t + 1]`` (next byte).

        :param split: ``"train"`` or ``"val"``.
        :param batch_size: windows per batch (>= 1).
        :param seq_len: bytes per window (>= 1; the split must hold more than ``seq_len`` bytes).
        :param generator: drives the window starts; pass a seeded one for a reproducible data order.
        :return: ``(x, y)``, both int64 of shape ``(batch_size, seq_len)`` with values in ``[0, 256)``.
        """
        return get_batch(self.data(split), batch_size, seq_len, generator)


def get_batch(
    data: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``batch_size`` random windows of ``seq_len + 1`` bytes from a uint8 stream (see ByteCorpus)."""
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size={batch_size} and seq_len={seq_len} must both be >= 1")
    n = data.numel()
    if n <= seq_len + 1:
        raise ValueError(f"the stream holds {n} bytes, too few for seq_len={seq_len}; raise max_bytes")
    starts = torch.randint(0, n - seq_len - 1, (batch_size,), generator=generator)  # (B,)
    idx = starts[:, None] + torch.arange(seq_len + 1)  # (B, T+1)
    chunk = data[idx].long()  # (B, T+1)
    return chunk[:, :-1], chunk[:, 1:]


def _select(
    files: list[tuple[str, Path]], val_fraction: float, max_bytes: int | None
) -> dict[str, list[tuple[str, Path, int]]]:
    """Per split, the files in sorted order with the number of bytes taken from each (budgeted)."""
    budget: dict[str, float] = {
        "train": float("inf") if max_bytes is None else max_bytes * (1.0 - val_fraction),
        "val": float("inf") if max_bytes is None else max_bytes * val_fraction,
    }
    chosen: dict[str, list[tuple[str, Path, int]]] = {"train": [], "val": []}
    used = {"train": 0, "val": 0}
    for rel, path in files:
        s = split_of(rel, val_fraction)
        left = budget[s] - used[s]
        if left <= 0:
            continue
        size = path.stat().st_size
        take = int(min(size, left))
        if take > 0:
            chosen[s].append((rel, path, take))
            used[s] += take + len(_SEP)
    return chosen


def load_corpus(
    max_bytes: int | None = None,
    val_fraction: float = 0.1,
    *,
    root: Path | str | None = None,
    cache: Path | str | None = None,
) -> ByteCorpus:
    """Build (or load from the cache) the stdlib byte corpus.

    :param max_bytes: total size knob, split ``(1 - val_fraction) : val_fraction`` between train and val;
        each split takes whole files in sorted order and truncates the last one. ``None`` takes everything
        (about 12 MB on CPython 3.11). Tests use ~200 kB.
    :param val_fraction: share of files (by path hash) held out for validation, in (0, 1).
    :param root: stdlib directory (default ``sysconfig.get_paths()["stdlib"]``); tests may point elsewhere.
    :param cache: cache directory (default :func:`cache_dir`).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction} must lie in (0, 1), e.g. 0.1")
    if max_bytes is not None and max_bytes < 1024:
        raise ValueError(f"max_bytes={max_bytes} is too small; use >= 1024 (or None for the whole stdlib)")
    files = stdlib_files(Path(root) if root is not None else None)
    if not files:
        raise FileNotFoundError(f"no .py files found under {root or sysconfig.get_paths()['stdlib']}")
    chosen = _select(files, val_fraction, max_bytes)
    h = hashlib.sha256(f"{_CACHE_VERSION}|{max_bytes}|{val_fraction}".encode())
    for s in ("train", "val"):
        for rel, path, take in chosen[s]:
            st = path.stat()
            h.update(f"|{s}:{rel}:{st.st_size}:{st.st_mtime_ns}:{take}".encode())
    key = h.hexdigest()[:24]
    cdir = Path(cache) if cache is not None else cache_dir()
    base = cdir / f"stdlib-{key}"
    meta_path = base.with_suffix(".json")
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            train = np.load(base.with_name(base.name + "-train.npy"))
            val = np.load(base.with_name(base.name + "-val.npy"))
            return ByteCorpus(train, val, meta["train_files"], meta["val_files"], key)
        except (OSError, ValueError, KeyError) as exc:  # a torn or foreign entry: rebuild it
            log.warning("rebuilding corrupt corpus cache entry %s: %s", base, exc)
    arrays: dict[str, np.ndarray] = {}
    for s in ("train", "val"):
        parts = [path.read_bytes()[:take] + _SEP for _, path, take in chosen[s]]
        arrays[s] = np.frombuffer(b"".join(parts), dtype=np.uint8).copy()
    if arrays["val"].size < 2 or arrays["train"].size < 2:
        raise ValueError(f"max_bytes={max_bytes} leaves a split empty; raise it or val_fraction")
    names = {s: [rel for rel, _, _ in chosen[s]] for s in ("train", "val")}
    corpus = ByteCorpus(arrays["train"], arrays["val"], names["train"], names["val"], key)
    try:
        cdir.mkdir(parents=True, exist_ok=True)
        for s in ("train", "val"):
            _atomic_write(base.with_name(f"{base.name}-{s}.npy"), functools.partial(_save_npy, arr=arrays[s]))
        meta = {"key": key, "train_files": corpus.train_files, "val_files": corpus.val_files}
        _atomic_write(meta_path, lambda f: f.write(json.dumps(meta).encode()))  # written last: the commit
    except OSError as exc:  # a read-only home is not fatal: the corpus is in memory
        log.warning("could not cache the corpus under %s: %s", cdir, exc)
    log.info(
        "stdlib corpus %s: %d train bytes (%d files), %d val bytes (%d files)",
        key,
        arrays["train"].size,
        len(corpus.train_files),
        arrays["val"].size,
        len(corpus.val_files),
    )
    return corpus


def _save_npy(f: BinaryIO, arr: np.ndarray) -> None:
    np.save(f, arr)


def _atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class DigitsData:
    """scikit-learn's 8x8 digits: features scaled to [0, 1], float32 ``(N, 64)``; labels int64 ``(N,)``."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor

    n_features: int = 64
    n_classes: int = 10

    def get_batch(
        self, split: Split, batch_size: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` random rows (with replacement): ``(x (B, 64) float32, y (B,) int64)``."""
        if split == "train":
            x, y = self.x_train, self.y_train
        elif split == "val":
            x, y = self.x_val, self.y_val
        else:
            raise ValueError(f"split={split!r} is unknown; choose 'train' or 'val'")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        idx = torch.randint(0, x.shape[0], (batch_size,), generator=generator)
        return x[idx], y[idx]


def load_digits_data(val_fraction: float = 0.2, seed: int = 0) -> DigitsData:
    """Load the bundled digits (offline) and split them with a seeded permutation.

    :param val_fraction: share of the 1797 images held out, in (0, 1).
    :param seed: seed of the split permutation (the split is a pure function of it).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction} must lie in (0, 1), e.g. 0.2")
    from sklearn.datasets import load_digits  # lazy on purpose (scikit-learn is heavy); ships the data

    bunch = load_digits()
    x = torch.from_numpy(np.asarray(bunch.data, dtype=np.float32) / 16.0)  # (1797, 64) in [0, 1]
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))  # (1797,)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(x.shape[0]))
    n_val = max(1, round(val_fraction * x.shape[0]))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    return DigitsData(x[train_idx], y[train_idx], x[val_idx], y[val_idx])
