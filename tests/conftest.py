"""Shared test configuration: one torch thread; GPU tests skip where no CUDA device is present."""

from __future__ import annotations

import inspect
import os

import pytest
import torch

# The suite's tensors are small, and `make test` runs on a shared 2-core machine: there, intra-op threads
# spend their time in OpenMP barriers (a 128 x 64 QR, the optimizer's orthonormalization, measured ~100x
# slower on two threads than on one while the other core is busy). One thread for every in-process test;
# tests that spawn workers or commands set their own. The fixture below puts it back after code under test
# changed it (a command's --threads).
torch.set_num_threads(1)


def _cache_the_interpreters_builtin_names() -> None:
    """Under ``TRITON_INTERPRET=1`` Triton re-patches ``triton.language`` at every launch and at every call of
    a ``@triton.jit`` helper inside a kernel: each time it lists every member of ``tl``, ``tl.core``,
    ``tl.math`` and the tensor classes with ``inspect.getmembers`` to find the builtins to wrap (a quarter
    to a third of an interpreted fused step under cProfile; thousands of listings per test). The builtins
    are the same names every time, so they are listed once per module or class; each call still checks and
    wraps exactly the members that are builtins at that moment, as Triton does, so the interpreted kernels
    compute the same thing. Skipped (Triton's own code runs) where Triton or the private function is not
    there or has another signature."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return
    try:
        import triton.language as tl
        from triton.runtime import interpreter
    except ImportError:
        return
    original = getattr(interpreter, "_patch_builtin", None)
    if original is None or not callable(getattr(interpreter, "_patch_attr", None)):
        return
    if list(inspect.signature(original).parameters) != ["pkg", "builder", "scope"]:
        return
    names: dict[int, tuple[object, tuple[str, ...]]] = {}

    def _patch_builtin(pkg: object, builder: object, scope: object) -> None:
        entry = names.get(id(pkg))
        if entry is None or entry[0] is not pkg:
            # the first listing comes from a launch, before anything is patched: every builtin's name
            entry = (pkg, tuple(n for n, m in inspect.getmembers(pkg) if tl.core.is_builtin(m)))
            names[id(pkg)] = entry
        for name in entry[1]:
            member = getattr(pkg, name)
            if tl.core.is_builtin(member):
                interpreter._patch_attr(pkg, name, member, builder, scope)

    interpreter._patch_builtin = _patch_builtin


_cache_the_interpreters_builtin_names()


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The files that hold a ``slow`` test run first, each file's tests in their order (a file's fixtures are
    # still set up once per worker): with ``--dist worksteal`` (pyproject.toml) each worker starts on one
    # half of the list and an idle one takes over half of what the other has left, so the long tests start
    # early and the run ends on short ones instead of one worker finishing a minute-long test alone.
    slow_files = {item.path for item in items if "slow" in item.keywords}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: the rest keep the collection order
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
