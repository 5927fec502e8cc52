"""Packaging: what each extra pulls in, how the Makefile picks a torch build, and the import contract of
``make lint`` (it passes on the tree and fails when an arrow runs the wrong way)."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

#: what the service image must not carry (the training stack, plotting, torch)
HEAVY = {"torch", "stable-baselines3", "gymnasium", "scipy", "scikit-learn", "matplotlib", "tensorboard"}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def requirements(*extras: str) -> set[str]:
    """Distributions that ``pip install mango-compress[extras]`` asks for (self-references expanded)."""
    names = {_name(r) for r in PROJECT["dependencies"]}
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in PROJECT["optional-dependencies"][extra]:
            if _name(req) == PROJECT["name"]:
                todo += re.search(r"\[(.*)\]", req).group(1).split(",")  # type: ignore[union-attr]
            else:
                names.add(_name(req))
    return names


def test_service_extra_is_lean() -> None:
    service = requirements("service")
    assert not service & HEAVY, f"the service extra pulls in {sorted(service & HEAVY)}"
    assert {"fastapi", "uvicorn", "pydantic", "pydantic-settings", "numpy", "safetensors"} <= service


def test_demo_extra_holds_no_training_stack() -> None:
    demo = requirements("demo")
    assert {"torch", "fastapi", "httpx", "matplotlib"} <= demo
    assert not demo & {"stable-baselines3", "scipy", "scikit-learn", "tensorboard"}


def test_dev_extra_holds_every_other_extra_and_the_linters() -> None:
    dev = requirements("dev")
    for extra in PROJECT["optional-dependencies"]:
        assert requirements(extra) <= dev, f"dev misses {sorted(requirements(extra) - dev)} of [{extra}]"
    assert {"import-linter", "ruff", "mypy", "pytest"} <= dev


def test_distribution_name_is_not_the_taken_one_and_the_cli_reports_it() -> None:
    import mango_cli

    assert PROJECT["name"] != "mango"  # another project on PyPI
    assert PROJECT["name"] == mango_cli.DISTRIBUTION


# ------------------------------------------------------------------------------------- torch set-up


@pytest.fixture
def cpu_index() -> Iterator[str]:
    """A loopback stand-in for PyTorch's CPU index: ``/torch/`` answers 200."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/torch/" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _closed_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once closed


def torch_install(tmp_path: Path, *, gpu: bool, index: str, force: str = "") -> tuple[str, str]:
    """Run the Makefile's torch step with a venv whose ``python`` records pip calls instead of installing.

    The probe of the index (``python -c``) runs for real; ``nvidia-smi`` is a stub that succeeds or is absent.
    Returns (make's output, the recorded ``pip install`` arguments).
    """
    venv, bin_dir = tmp_path / "venv", tmp_path / "bin"
    (venv / "bin").mkdir(parents=True)
    bin_dir.mkdir()
    log = tmp_path / "pip.log"
    python = venv / "bin" / "python"
    python.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-c" ]; then case "$2" in *urlopen*) exec {sys.executable} "$@";; esac; exit 0; fi\n'
        f'echo "$@" >> {log}\n'
    )
    python.chmod(0o755)
    if gpu:
        (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200'\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    # PATH: the stub's folder and the tools make's recipe uses; no real nvidia-smi can be found
    tools = {Path(shutil.which(t) or "/bin/sh").parent for t in ("sh", "echo", "touch", "test")}
    if not gpu and any((d / "nvidia-smi").exists() for d in tools):
        pytest.skip("a real nvidia-smi sits beside the shell tools")
    env = {**os.environ, "PATH": os.pathsep.join([str(bin_dir), *map(str, tools)])}
    argv = [shutil.which("make") or "make", "-C", str(ROOT), f"VENV={venv}", f"TORCH_CPU_INDEX={index}"]
    argv += [f"TORCH_INDEX_URL={force}", f"{venv}/.torch-installed"]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    pip = [line for line in log.read_text().splitlines() if "install" in line and "torch==" in line]
    assert len(pip) == 1, log.read_text()
    return out.stdout, pip[0]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_no_gpu_takes_the_cpu_index(tmp_path: Path, cpu_index: str) -> None:
    out, pip = torch_install(tmp_path, gpu=False, index=cpu_index)
    assert f"--index-url {cpu_index}" in pip
    assert "no NVIDIA GPU" in out
    assert "--no-compile" in pip.split()  # set-up time: no bytecode for torch's thousands of files


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_no_gpu_and_no_cpu_index_falls_back_to_the_plain_pin(tmp_path: Path) -> None:
    out, pip = torch_install(tmp_path, gpu=False, index=_closed_port_url())
    assert "--index-url" not in pip and re.search(r"torch==\d+\.\d+\.\d+", pip)
    assert "unreachable" in out


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_gpu_machine_takes_the_configured_index(tmp_path: Path, cpu_index: str) -> None:
    out, pip = torch_install(tmp_path, gpu=True, index=cpu_index)
    assert "--index-url" not in pip
    assert "NVIDIA GPU found" in out


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_torch_index_url_forces_an_index(tmp_path: Path) -> None:
    _, pip = torch_install(
        tmp_path, gpu=True, index=_closed_port_url(), force="https://example.invalid/cu128"
    )
    assert "--index-url https://example.invalid/cu128" in pip


# --------------------------------------------------------------------------------------- import contract


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("importlinter", reason="import-linter comes with the dev extra")
    script = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"
    # the tree under test first: grimp reads the packages it finds first on the path
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


def test_import_contract_is_kept() -> None:
    out = lint_imports(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_import_contract_catches_a_wrong_way_arrow(tmp_path: Path) -> None:
    # A copy of the tree where the wire contract imports the environment package.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    for package in config["root_packages"]:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    protocol = tmp_path / "client" / "protocol.py"
    protocol.write_text(protocol.read_text() + "\nimport envs.objectives  # noqa: E402\n")
    out = lint_imports(tmp_path)
    assert out.returncode != 0
    assert "client.protocol -> envs.objectives" in out.stdout
    assert re.search(r"The wire contract \(client\.protocol\) imports no other .* BROKEN", out.stdout)
