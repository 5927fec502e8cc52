"""The examples run as a user runs them (a subprocess each, a few dozen steps), with and without a real policy
service; and ``docs/api.md`` matches what ``docs/gen_api.py`` renders from the service's OpenAPI document."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from envs.data import cache_dir
from policy_service.launch import ServiceProcess, free_port
from tests.profile_cache import seed_lm_tiny_profile

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
#: A few steps of a small job; every example takes these flags.
TINY = [
    "--steps",
    "40",
    "--interval",
    "10",
    "--batch-size",
    "8",
    "--seq-len",
    "32",
    "--corpus-bytes",
    "300000",
]
TINY += ["--threads", "1"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MANGO_")}
    env["MANGO_CACHE_DIR"] = str(cache_dir())  # the suite's cache (tests/conftest.py), with its corpora
    # a job with a service profiles itself before it trains (profile="auto"): give it the measured profile
    seed_lm_tiny_profile(cache_dir())
    env.update(extra)
    return env


def _run(
    script: str, *args: str, env: dict[str, str], timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def _load_example(script: str) -> Any:
    """An example script as a module (``examples/`` is not a package), its ``main`` not run."""
    spec = importlib.util.spec_from_file_location(f"example_{Path(script).stem}", EXAMPLES / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _final(stdout: str) -> dict[str, str]:
    """The ``final: k=v ...`` line of plain_loop.py / lightning_callback.py."""
    line = next(line for line in stdout.splitlines() if line.startswith("final: "))
    return dict(kv.split("=", 1) for kv in line.removeprefix("final: ").split())


def _decisions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(tmp_path_factory.mktemp("service") / "service.log")
    svc.start(timeout_s=180)
    try:
        yield svc
    finally:
        svc.stop()


# ------------------------------------------------------------------------------------------ plain_loop.py


def test_plain_loop_with_the_local_controller(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    proc = _run("plain_loop.py", *TINY, "--decision-log", str(log), env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = _final(proc.stdout)
    assert math.isfinite(float(final["loss"])) and float(final["loss"]) < 5.6  # below chance (ln 256)
    assert final["decisions"] == final["local"] == "4" and final["service"] == "0"
    entries = _decisions(log)
    assert len(entries) == 4 and {e["source"] for e in entries} == {"local"}
    assert entries[0]["policy"] == "local:accordion" and entries[0]["reason"].startswith("accordion:")
    assert len(re.findall(r"^step +\d+ +loss", proc.stdout, flags=re.M)) == 4


@pytest.mark.slow
def test_plain_loop_asks_the_service_when_the_url_is_set(tmp_path: Path, service: ServiceProcess) -> None:
    log = tmp_path / "decisions.jsonl"
    env = _env(MANGO_SERVICE_URL=service.url, MANGO_API_KEY=service.api_key)
    proc = _run("plain_loop.py", *TINY, "--decision-log", str(log), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = _final(proc.stdout)
    assert int(final["service"]) >= 1 and final["fallbacks"] == "0"
    # the first decision is the hook's own (objective + cost profile), made before the first interval
    assert {e["source"] for e in _decisions(log) if e["policy"] != "first:prior"} == {"service"}


# ----------------------------------------------------------------------------------------- ddp_train.py


def test_ddp_example_keeps_the_replicas_identical() -> None:
    """Two gloo ranks under torchrun, each with its own batches: rank 0's learned policy decides, every rank
    applies its settings, and the parameters end bit-identical."""
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(EXAMPLES / "ddp_train.py"), *TINY],
        cwd=ROOT, env=_env(PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the ranks share torchrun's stdout, where one rank's line can run into the other's
    lines = proc.stdout.replace("final:", "\nfinal:").splitlines()
    found = [line.split()[1:] for line in lines if line.startswith("final:")]
    finals = sorted((dict(kv.split("=", 1) for kv in f) for f in found), key=lambda f: f["rank"])
    assert [f["rank"] for f in finals] == ["0", "1"], proc.stdout[-3000:] + proc.stderr[-3000:]
    assert finals[0]["params"] == finals[1]["params"] and finals[0]["setting"] == finals[1]["setting"]
    assert int(finals[0]["decisions"]) >= 4 and finals[1]["decisions"] == "0"  # rank 1 follows
    assert finals[0]["changes"] == finals[1]["changes"]
    assert finals[0]["loss"] != finals[1]["loss"]  # each rank trained on its own batches


# -------------------------------------------------------------------------------- train_with_service.py


@pytest.mark.slow
def test_train_with_service_as_in_compose(tmp_path: Path, service: ServiceProcess) -> None:
    out = tmp_path / "out"
    env = _env(MANGO_SERVICE_URL=service.url, MANGO_API_KEY=service.api_key, MANGO_OUT_DIR=str(out))
    proc = _run("train_with_service.py", *TINY, "--wait-s", "30", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (summary_path,) = out.glob("*.summary.json")
    summary = json.loads(summary_path.read_text())
    assert math.isfinite(summary["final_loss"]) and summary["steps"] == 40
    assert summary["service_decisions"] >= 1 and summary["fallbacks"] == 0
    assert summary["policies"], "the summary names the policies that decided"
    entries = _decisions(Path(summary["decision_log"]))
    assert Path(summary["decision_log"]).parent == out  # writes only where it is told (or /tmp)
    answers = {e["source"] for e in entries if e["policy"] != "first:prior"}
    assert len(entries) == summary["decisions"] and answers == {"service"}
    assert service.api_key not in proc.stdout + proc.stderr, "the key must never be printed"


def test_train_with_service_needs_url_and_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # in this process: the refusal comes before any training, and a subprocess would spend its time importing
    # torch (the other tests run the script as a subprocess, its exit status included)
    for name in ("MANGO_SERVICE_URL", "MANGO_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert _load_example("train_with_service.py").main(TINY) == 2
    err = capsys.readouterr().err
    assert "MANGO_SERVICE_URL" in err and "MANGO_API_KEY" in err


@pytest.mark.slow
def test_train_with_service_fails_loudly_when_no_decision_came_from_the_service(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = _env(MANGO_SERVICE_URL=url, MANGO_API_KEY="k" * 32, MANGO_OUT_DIR=str(tmp_path))
    proc = _run("train_with_service.py", "--steps", "20", *TINY[2:], "--wait-s", "0", env=env)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "no decision came from the service" in proc.stderr
    summary = json.loads(next(tmp_path.glob("*.summary.json")).read_text())
    # training went on regardless: every interval closed, none was decided by the (absent) service. Whether a
    # fallback arrived before the 20 steps ended depends on the retry back-off, so it is not asserted.
    assert summary["service_decisions"] == 0
    assert summary["intervals"] >= 1 and summary["steps"] == 20
    assert math.isfinite(summary["final_loss"])


# ------------------------------------------------------------------------------- lightning_callback.py


def _lightning_missing() -> bool:
    return not any(importlib.util.find_spec(name) is not None for name in ("lightning", "pytorch_lightning"))


@pytest.mark.skipif(
    _lightning_missing(),
    reason="PyTorch Lightning is not installed (optional extra: pip install -e '.[integrations]')",
)
def test_lightning_callback_attaches_the_hook(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    proc = _run("lightning_callback.py", *TINY, "--decision-log", str(log), env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = _final(proc.stdout)
    assert final["steps"] == "40"  # one hook step per optimizer step
    assert math.isfinite(float(final["loss"])) and final["decisions"] == "4"
    assert len(_decisions(log)) == 4


# --------------------------------------------------------------------------------------------- docs


def _gen_api():  # docs/ is not a package: load the generator by path
    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "docs" / "gen_api.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = gen  # dataclasses look their module up while the class is built
    spec.loader.exec_module(gen)
    return gen


def test_api_doc_is_generated_from_the_current_schema() -> None:
    gen = _gen_api()
    text = gen.render(gen.openapi())
    current = (ROOT / "docs" / "api.md").read_text()
    assert current == text, "docs/api.md is out of date: run python docs/gen_api.py"
    for path in ("/v1/decide", "/v1/policies", "/v1/policies/reload", "/healthz", "/readyz", "/metrics"):
        assert f"`{path}`" in text
    for schema in ("DecideRequest", "TelemetryRecord", "Decision", "Objective", "CompressionSetting"):
        assert f"### {schema}" in text


def test_operations_guide_lists_every_service_setting() -> None:
    from policy_service.config import Settings

    gen = _gen_api()
    current = (ROOT / "docs" / "operations.md").read_text()
    assert current == gen.splice_settings(current), (
        "docs/operations.md is out of date: run python docs/gen_api.py"
    )
    for name in Settings.model_fields:
        assert f"`MANGO_{name.upper()}`" in current
