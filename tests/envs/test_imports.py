"""Import hygiene of ``envs``: the workloads load without gymnasium or SB3, the surrogate path without torch,
and the modules import one way (no cycles)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ENVS = Path(__file__).resolve().parents[2] / "envs"


def _loaded(code: str, names: tuple[str, ...]) -> dict[str, bool]:
    probe = f"import sys\n{code}\nimport json; print(json.dumps({{n: n in sys.modules for n in {names!r}}}))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_workloads_import_without_gymnasium_or_sb3() -> None:
    loaded = _loaded(
        "import envs.data, envs.models, envs.workloads, envs.objectives",
        ("gymnasium", "stable_baselines3", "envs.env", "envs.surrogate"),
    )
    assert loaded == dict.fromkeys(loaded, False), loaded


def test_package_import_is_light_and_names_resolve_on_use() -> None:
    loaded = _loaded("import envs; envs.get_workload('lm-tiny-cosine')", ("gymnasium", "torch"))
    assert loaded == {"gymnasium": False, "torch": False}
    loaded = _loaded(
        "import envs, gymnasium as gym; assert envs.ENV_ID in gym.registry", ("envs.env", "stable_baselines3")
    )
    assert loaded == {"envs.env": True, "stable_baselines3": False}


def test_surrogate_path_imports_no_torch() -> None:
    loaded = _loaded("import envs.env, envs.surrogate, envs.fit", ("torch", "stable_baselines3"))
    assert loaded == {"torch": False, "stable_baselines3": False}


def _module_imports(path: Path) -> tuple[set[str], set[str]]:
    """``envs.*`` modules imported at module level, and those imported inside functions."""
    tree = ast.parse(path.read_text())
    top: set[str] = set()
    inner: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("envs."):
            names = {node.module}
        elif isinstance(node, ast.Import):
            names = {a.name for a in node.names if a.name.startswith("envs.")}
        else:
            continue
        (top if node.col_offset == 0 else inner).update(names)
    return top, inner


def test_envs_module_graph_has_no_cycles() -> None:
    """Every ``envs`` module's imports of other ``envs`` modules (module level and lazy) form a DAG."""
    graph = {}
    for f in sorted(ENVS.glob("*.py")):
        if f.name == "__init__.py":
            continue
        top, inner = _module_imports(f)
        graph[f"envs.{f.stem}"] = top | inner
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        if state.get(m) == 2:
            return
        assert state.get(m) != 1, f"import cycle: {' -> '.join([*path, m])}"
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            visit(d, [*path, m])
        state[m] = 2

    for m in graph:
        visit(m, [])
    # the backends share envs.episode instead of importing the env; the fit does not import the simulator
    for backend in ("envs.training", "envs.simulator", "envs.replay"):
        assert "envs.env" not in graph[backend] and "envs.episode" in graph[backend]
    assert not graph["envs.fit"] & {"envs.surrogate", "envs.simulator", "envs.env"}
    assert not graph["envs.simulator"] & {"envs.fit", "envs.surrogate"}


def test_every_public_name_resolves() -> None:
    import envs

    for name in envs.__all__:
        assert getattr(envs, name) is not None, name
