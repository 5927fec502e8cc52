"""Shared test configuration: one torch thread; GPU tests skip where no CUDA device is present."""

from __future__ import annotations

import getpass
import inspect
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

# The suite's tensors are small, and `make test` runs on a shared 2-core machine: there, intra-op threads
# spend their time in OpenMP barriers (a 128 x 64 QR, the optimizer's orthonormalization, measured ~100x
# slower on two threads than on one while the other core is busy). One thread for every in-process test;
# tests that spawn workers or commands set their own. The fixture below puts it back after code under test
# changed it (a command's --threads).
torch.set_num_threads(1)

# The suite's own cache (datasets, AdamW references, cost profiles), never the user's ~/.cache/mango: the
# examples' tests seed the project's recorded lm-tiny profile, and profiles measured here run under the
# suite's load, so either would stand in for `make demo`'s own measurement of this machine afterwards. Kept
# across runs (corpora cost seconds to build); every worker and every command the tests start inherit it.
TEST_CACHE = Path(tempfile.gettempdir()) / f"mango-test-cache-{getpass.getuser()}"
os.environ["MANGO_CACHE_DIR"] = str(TEST_CACHE)


def _interpreter_function(name: str, params: list[str]) -> tuple[Any, Any] | None:
    """``(triton.runtime.interpreter, its private function name)`` where ``TRITON_INTERPRET=1`` and the
    function is there with exactly these parameters; None (leave Triton's own code alone) otherwise."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return None
    try:
        from triton.runtime import interpreter
    except ImportError:
        return None
    original = getattr(interpreter, name, None)
    if original is None or list(inspect.signature(original).parameters) != params:
        return None
    return interpreter, original


def _cache_the_interpreters_builtin_names() -> None:
    """Under ``TRITON_INTERPRET=1`` Triton re-patches ``triton.language`` at every launch and at every call of
    a ``@triton.jit`` helper inside a kernel: each time it lists every member of ``tl``, ``tl.core``,
    ``tl.math`` and the tensor classes with ``inspect.getmembers`` to find the builtins to wrap (a quarter
    to a third of an interpreted fused step under cProfile; thousands of listings per test). The builtins
    are the same names every time, so they are listed once per module or class; each call still checks and
    wraps exactly the members that are builtins at that moment, as Triton does, so the interpreted kernels
    compute the same thing. Skipped (Triton's own code runs) where Triton or the private function is not
    there or has another signature."""
    found = _interpreter_function("_patch_builtin", ["pkg", "builder", "scope"])
    if found is None or not callable(getattr(found[0], "_patch_attr", None)):
        return
    interpreter = found[0]
    import triton.language as tl

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


def _patch_the_language_once_per_launch() -> None:
    """Under ``TRITON_INTERPRET=1`` a kernel launch patches ``triton.language`` (``_patch_lang``: every
    builtin of ``tl``, ``tl.core``, ``tl.math`` and the tensor classes wrapped for the interpreter, then the
    tensor dunders, ``range``, ``reduce`` and friends replaced) and restores it when the grid is done. Every
    call of a ``@triton.jit`` helper inside the kernel runs ``_patch_lang`` again, for every program of the
    grid: tens of thousands of calls per fused-step test, a sixth of its time under cProfile. Inside a launch
    that already patched the same language modules that call changes nothing the kernel can see: the
    builtins are already wrapped (a wrapper is not a builtin, so none is wrapped twice), and the rest is set
    to fresh copies of the same stateless functions, whose scope Triton drops without restoring (the
    launch's restore puts the originals back either way). So a helper's call skips it when its modules are
    among those already patched in the running launch; a helper that sees another language module (Triton's
    own ``tl.sum`` or ``tl.cdiv`` see ``tl.core``, a kernel module sees ``tl``) runs Triton's ``_patch_lang``
    once per launch, and any call outside a launch runs it as before. The kernels run the same interpreted
    code as before.
    Skipped (Triton's own code runs) where the private names are not there or have another signature."""
    found = _interpreter_function("_patch_lang", ["fn"])
    if found is None:
        return
    interpreter, original = found
    grid_executor = getattr(interpreter, "GridExecutor", None)
    scope_class = getattr(interpreter, "_LangPatchScope", None)
    if grid_executor is None or scope_class is None:
        return
    executor = grid_executor.__call__
    import triton.language as tl

    # the language modules the running launch patched (None: no launch running, or not patched yet)
    state: dict[str, frozenset[int] | None] = {"patched": None}
    running = {"launch": False}

    def _modules(fn: object) -> frozenset[int]:
        glob = getattr(fn, "__globals__", {})
        return frozenset(id(v) for v in glob.values() if v is tl or v is tl.core)

    def _patch_lang(fn: object) -> object:
        modules = _modules(fn)
        patched = state["patched"]
        if patched is not None and modules and modules <= patched:  # (none: Triton asserts, as it did)
            return scope_class()  # nothing changed, nothing to restore
        scope = original(fn)
        if running["launch"]:  # the launch's own patch, or a helper's that patched one more module for good
            state["patched"] = modules if patched is None else patched | modules
        return scope

    def _launch(self: object, *args: object, **kwargs: object) -> object:
        outer = (running["launch"], state["patched"])
        running["launch"], state["patched"] = True, None
        try:
            return executor(self, *args, **kwargs)
        finally:
            running["launch"], state["patched"] = outer

    interpreter._patch_lang = _patch_lang
    interpreter.GridExecutor.__call__ = _launch


def _remember_the_interpreters_numpy_dtypes() -> None:
    """Under ``TRITON_INTERPRET=1`` every interpreted cast, load, store and arithmetic result asks
    ``interpreter._get_np_dtype`` for the numpy dtype of a Triton type, and each call builds its 19-entry
    table again (hundreds of thousands of calls per fused-step test, about 6 % of its time under cProfile).
    The answer depends on the type alone (a pointer, a block's element type, or the scalar type), and a
    type's class and name pin it down (the name of a scalar type is the type; a pointer's names its element
    type; a block's names its shape and element type), so each answer is kept under the type's class and name
    after Triton's own function gave it; a type Triton refuses is refused again each time, and a type without
    a string name goes to Triton's function every time. Skipped (Triton's own code runs) where the private
    function is not there or has another signature."""
    found = _interpreter_function("_get_np_dtype", ["tt_dtype"])
    if found is None:
        return
    interpreter, original = found
    known: dict[object, object] = {}

    def _get_np_dtype(tt_dtype: object) -> object:
        name = getattr(tt_dtype, "name", None)
        if not isinstance(name, str):
            return original(tt_dtype)
        key = (type(tt_dtype), name)
        try:
            return known[key]
        except KeyError:
            answer = known[key] = original(tt_dtype)
            return answer

    interpreter._get_np_dtype = _get_np_dtype


_cache_the_interpreters_builtin_names()
_patch_the_language_once_per_launch()
_remember_the_interpreters_numpy_dtypes()


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
