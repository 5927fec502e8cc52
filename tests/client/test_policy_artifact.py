"""Policy artifacts (client/policy/artifact.py): round trip, and every refusal with a message that says why.

Artifacts are written from the training-side torch module (``TinyFormer.weights()``) as ``mango train`` does,
and loaded by the runtime (numpy); torch is used here only to play the trainer and the attacker."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from agents.tinyformer import TinyFormer, TinyFormerConfig
from client.policy.artifact import (
    ARTIFACT_FORMAT,
    ArtifactError,
    export_artifact,
    find_manifests,
    load_artifact,
    sha256_file,
    weights_bytes,
)
from client.protocol import DEFAULT_GRID, OBS_SPEC_VERSION, ActionGrid


@pytest.fixture
def exported(tmp_path: Path) -> tuple[TinyFormer, Path]:
    torch.manual_seed(0)
    model = TinyFormer().eval()
    path = export_artifact(
        model.weights(),
        model.config,
        tmp_path,
        name="ppo-tiny",
        version="1.2.3",
        training_command="mango train --seed 0",
        training_config={"lr": 3e-4, "steps": 1000},
        metrics={"mean_reward": -0.5},
    )
    return model, path


def _edit_manifest(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _rehash(manifest: Path, weights: Path) -> None:
    """Make the manifest's hash match whatever ``weights`` now holds (the attacker's best move)."""
    data = json.loads(manifest.read_text())
    data["weights"]["sha256"] = sha256_file(weights)
    data["weights"]["bytes"] = weights.stat().st_size
    data["weights"]["file"] = weights.name
    manifest.write_text(json.dumps(data))


def test_round_trip(exported: tuple[TinyFormer, Path]) -> None:
    model, path = exported
    m = json.loads(path.read_text())
    assert m["format"] == ARTIFACT_FORMAT and m["name"] == "ppo-tiny" and m["version"] == "1.2.3"
    assert m["obs_spec_version"] == OBS_SPEC_VERSION
    assert m["action_grid"] == json.loads(DEFAULT_GRID.model_dump_json())
    assert m["training"] == {"command": "mango train --seed 0", "config": {"lr": 3e-4, "steps": 1000}}
    assert m["metrics"] == {"mean_reward": -0.5} and m["created_at"]
    assert m["config"] == model.config.to_dict()
    assert m["weights"]["sha256"] == sha256_file(path.with_suffix(".safetensors"))
    for where in (path, path.parent, path.with_suffix(".safetensors")):
        art = load_artifact(where)
        assert art.name == "ppo-tiny" and art.grid == DEFAULT_GRID and art.config == model.config
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(art.weights[k], v.numpy())
        obs = torch.randn(4, model.config.obs_size)
        np.testing.assert_array_equal(art.model.act(obs.numpy()), model.act(obs).numpy())
    assert find_manifests(path.parent) == [path]


def test_bad_hash_is_refused(exported: tuple[TinyFormer, Path]) -> None:
    _, path = exported
    weights = path.with_suffix(".safetensors")
    torch.manual_seed(9)
    save_file({k: v.contiguous() for k, v in TinyFormer().state_dict().items()}, weights)  # replaced weights
    with pytest.raises(ArtifactError, match=r"sha256 \w+ does not match the manifest"):
        load_artifact(path)


def test_unknown_spec_version_is_refused(exported: tuple[TinyFormer, Path]) -> None:
    _, path = exported
    _edit_manifest(path, obs_spec_version="mango-obs-v0")
    with pytest.raises(ArtifactError) as err:
        load_artifact(path)
    assert "'mango-obs-v0'" in str(err.value) and OBS_SPEC_VERSION in str(err.value)
    assert "observation spec" in str(err.value)


class _Boom:
    """Unpickling this would create a marker file: proof that nothing was unpickled."""

    marker: Path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_torch_zip_checkpoint_is_refused_even_with_a_matching_hash(exported: tuple[TinyFormer, Path]) -> None:
    model, path = exported
    weights = path.with_suffix(".safetensors")
    torch.save(model.state_dict(), weights)  # a zip with a pickle inside, under the .safetensors name
    _rehash(path, weights)
    with pytest.raises(ArtifactError, match=r"not a safetensors file: it is a zip archive.*pickle"):
        load_artifact(path)


def test_raw_pickle_is_refused_and_never_unpickled(exported: tuple[TinyFormer, Path], tmp_path: Path) -> None:
    _, path = exported
    weights = path.with_suffix(".safetensors")
    boom = _Boom()
    boom.marker = tmp_path / "pwned"
    weights.write_bytes(pickle.dumps(boom, protocol=4))
    _rehash(path, weights)
    with pytest.raises(ArtifactError, match="it is a Python pickle"):
        load_artifact(path)
    assert not boom.marker.exists()


def test_manifest_pointing_to_pickle_weights_is_refused(exported: tuple[TinyFormer, Path]) -> None:
    model, path = exported
    pt = path.parent / "ppo-tiny.pt"
    torch.save(model.state_dict(), pt)
    _rehash(path, pt)
    with pytest.raises(ArtifactError, match=r"'ppo-tiny.pt' is not a .safetensors file"):
        load_artifact(path)
    data = json.loads(path.read_text())
    data["weights"]["format"] = "pickle"
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="weights format 'pickle' is refused"):
        load_artifact(path)
    with pytest.raises(ArtifactError, match="only from safetensors"):
        load_artifact(pt)


def test_manifest_that_is_a_pickle_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "evil.json"
    bad.write_bytes(pickle.dumps({"format": ARTIFACT_FORMAT}, protocol=4))
    with pytest.raises(ArtifactError, match="manifest is not JSON, it is a Python pickle"):
        load_artifact(bad)


def test_weights_outside_the_directory_are_refused(exported: tuple[TinyFormer, Path]) -> None:
    _, path = exported
    data = json.loads(path.read_text())
    data["weights"]["file"] = "../elsewhere.safetensors"
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="plain file name"):
        load_artifact(path)


def test_grid_checks(exported: tuple[TinyFormer, Path]) -> None:
    _, path = exported
    other = ActionGrid(version="grid-v2", ranks=(1, 2, 4, 8, 16, 32, 64, 0), bits=(2, 3, 4, 8, 16, 32))
    with pytest.raises(ArtifactError, match="differs from the expected"):
        load_artifact(path, expected_grid=other)
    grid = json.loads(DEFAULT_GRID.model_dump_json())
    grid["ranks"] = [1, 2, 4, 8, 16, 32, 5, 0]  # 5 is not a protocol rank
    _edit_manifest(path, action_grid=grid)
    with pytest.raises(ArtifactError, match=r"off the protocol grid: \['rank=5'\]"):
        load_artifact(path)
    grid["ranks"] = [1, 2, 0]
    _edit_manifest(path, action_grid=grid)
    with pytest.raises(ArtifactError, match="nvec"):
        load_artifact(path)


def test_architecture_mismatch_and_bad_tensors(tmp_path: Path) -> None:
    model = TinyFormer(TinyFormerConfig(d_model=32, n_heads=4))
    path = export_artifact(model.weights(), model.config, tmp_path, name="small", version="1")
    _edit_manifest(path, config={**model.config.to_dict(), "d_model": 64})
    with pytest.raises(ArtifactError, match="shape"):
        load_artifact(path)
    _edit_manifest(path, config=model.config.to_dict())
    weights = path.with_suffix(".safetensors")
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    tensors["action_net.bias"][0] = float("nan")
    save_file(tensors, weights)
    _rehash(path, weights)
    with pytest.raises(ArtifactError, match="NaN or inf"):
        load_artifact(path)
    del tensors["action_net.bias"]
    save_file(tensors, weights)
    _rehash(path, weights)
    with pytest.raises(ArtifactError, match=r"missing \['action_net.bias'\]"):
        load_artifact(path)
    tensors = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}  # a dtype numpy lacks
    save_file(tensors, weights)
    _rehash(path, weights)
    with pytest.raises(ArtifactError, match="dtype 'BF16' that the runtime cannot read; export float32"):
        load_artifact(path)


def test_export_refuses_bad_names_metadata_and_weights(tmp_path: Path) -> None:
    model = TinyFormer()
    w, cfg = model.weights(), model.config
    with pytest.raises(ArtifactError, match="must match"):
        export_artifact(w, cfg, tmp_path, name="../x", version="1")
    with pytest.raises(ArtifactError, match="JSON-serializable"):
        export_artifact(w, cfg, tmp_path, name="x", version="1", metrics={"r": float("nan")})
    with pytest.raises(ArtifactError, match=r"cannot export 'x'.*shape"):
        export_artifact(w, TinyFormerConfig(d_model=32), tmp_path, name="x", version="1")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_the_safetensors_bytes_are_canonical(exported: tuple[TinyFormer, Path]) -> None:
    """One format, whichever side writes it: the runtime's bytes for the loaded weights are the file's."""
    model, path = exported
    art = load_artifact(path)
    blob = weights_bytes(art.weights, name="ppo-tiny", version="1.2.3")
    assert blob == path.with_suffix(".safetensors").read_bytes()
    assert weights_bytes(art.weights) == weights_bytes(model.weights())


def test_manifest_schema_errors_name_the_field(exported: tuple[TinyFormer, Path]) -> None:
    _, path = exported
    data = json.loads(path.read_text())
    data["weights"]["sha256"] = "nothex"
    data["surprise"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError) as err:
        load_artifact(path)
    assert "weights.sha256" in str(err.value) and "surprise" in str(err.value)
    assert hashlib.sha256(b"").hexdigest() not in str(err.value)
