"""SB3 policy -> TinyFormer -> artifact: same deterministic actions; refusals specific to SB3 outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from agents.export import export_policy, load_into_policy, policy_to_tinyformer, tinyformer_from_artifact
from agents.extractor import policy_kwargs, reinit_extractor
from agents.rollout import sb3_actor
from agents.tinyformer import TinyFormer, TinyFormerConfig
from agents.vec import JointActions
from client.policy import ArtifactError, load_artifact
from client.protocol import DEFAULT_GRID
from envs.sb3 import SB3VecEnvAdapter
from envs.surrogate import SurrogateVecEnv


def _ppo(extractor: str = "tinyformer", joint: bool = False, **overrides: Any) -> PPO:
    cfg = TinyFormerConfig(d_model=16, n_heads=2, n_layers=2, joint=joint)
    kw = policy_kwargs(extractor, cfg)  # type: ignore[arg-type]
    kw.update(overrides)
    venv: Any = SB3VecEnvAdapter(SurrogateVecEnv(num_envs=2, split="train"), seed=0)
    if joint:
        venv = JointActions(venv)
    model = PPO("MlpPolicy", venv, n_steps=8, batch_size=8, policy_kwargs=kw, device="cpu", seed=0)
    reinit_extractor(model.policy)
    # Random weights everywhere (SB3 starts the logits near 0, where argmax ties would make the test weak).
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.policy.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def _observations(n: int, cfg: TinyFormerConfig, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, cfg.obs_size, generator=g) * 2
    for i in range(n):  # random padding depth per row, like short histories
        pad = int(torch.randint(0, cfg.window, (1,), generator=g))
        for t in range(cfg.window):
            obs[i, t * cfg.token_dim] = 0.0 if t < pad else 1.0
            if t < pad:
                obs[i, t * cfg.token_dim : (t + 1) * cfg.token_dim] = 0.0
    return obs.clamp(-10, 10)


def test_exported_module_acts_like_the_sb3_policy(tmp_path: Path) -> None:
    model = _ppo()
    tf = policy_to_tinyformer(model.policy)
    obs = _observations(512, tf.config)
    sb3_actions, _ = model.predict(obs.numpy(), deterministic=True)
    np.testing.assert_array_equal(tf.act(obs).numpy(), sb3_actions)
    with torch.no_grad():
        values = model.policy.predict_values(obs).squeeze(-1)
    torch.testing.assert_close(tf(obs)[1], values)
    # ... and after the safetensors round trip, through the numpy runtime the service and the hook run
    art = load_artifact(export_policy(model.policy, tmp_path, name="eq", version="1"))
    np.testing.assert_array_equal(art.model.act(obs.numpy()), sb3_actions)
    # ... and back to torch, for fine-tuning (mango train --init-from)
    back = tinyformer_from_artifact(art)
    for k, v in tf.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_a_joint_head_exports_and_acts_like_the_sb3_policy(tmp_path: Path) -> None:
    model = _ppo(joint=True)
    assert model.action_space.n == DEFAULT_GRID.size
    tf = policy_to_tinyformer(model.policy)
    assert tf.config.joint and tf.action_net.out_features == DEFAULT_GRID.size
    obs = _observations(512, tf.config)
    flat, _ = model.predict(obs.numpy(), deterministic=True)
    want = DEFAULT_GRID.unravel(flat)  # [n, 3]
    assert len({tuple(a) for a in want.tolist()}) > 1
    np.testing.assert_array_equal(tf.act(obs).numpy(), want)
    np.testing.assert_array_equal(sb3_actor(model)(obs.numpy()), want)
    art = load_artifact(export_policy(model.policy, tmp_path, name="joint", version="1"))
    assert art.config.joint
    np.testing.assert_array_equal(art.model.act(obs.numpy()), want)
    # a factorized config on a joint policy (or the reverse) is refused by its head's width
    fx = model.policy.features_extractor
    object.__setattr__(fx, "config", TinyFormerConfig(d_model=16, n_heads=2, n_layers=2))
    with pytest.raises(ValueError, match="logits but its TinyFormerConfig"):
        policy_to_tinyformer(model.policy)


def test_the_joint_env_steps_the_grid_point_it_is_given() -> None:
    inner = SB3VecEnvAdapter(SurrogateVecEnv(num_envs=2, split="train"), seed=0)
    venv = JointActions(inner)
    venv.reset()
    flat = DEFAULT_GRID.ravel([[6, 2, 0], [7, 3, 0]])
    venv.step_async(flat)
    assert inner._actions is not None
    np.testing.assert_array_equal(inner._actions, [[6, 2, 0], [7, 3, 0]])
    venv.step_wait()
    with pytest.raises(TypeError, match="MultiDiscrete"):
        JointActions(venv)


def test_load_into_policy_is_the_inverse() -> None:
    a, b = _ppo(), _ppo()
    with torch.no_grad():
        for p in b.policy.parameters():
            p.mul_(-1.0)
    load_into_policy(b.policy, policy_to_tinyformer(a.policy))
    obs = _observations(64, TinyFormerConfig(d_model=16, n_heads=2, n_layers=2), seed=2).numpy()
    np.testing.assert_array_equal(
        a.predict(obs, deterministic=True)[0], b.predict(obs, deterministic=True)[0]
    )
    with pytest.raises(ValueError, match="architecture mismatch"):
        load_into_policy(b.policy, TinyFormer(TinyFormerConfig(d_model=32)))


def test_only_linear_heads_on_a_tinyformer_export() -> None:
    with pytest.raises(ValueError, match="--extractor tinyformer"):
        policy_to_tinyformer(_ppo("mlp").policy)
    with pytest.raises(ValueError, match="net_arch"):
        policy_to_tinyformer(_ppo(net_arch={"pi": [8], "vf": [8]}).policy)


def test_an_sb3_checkpoint_is_refused_as_an_artifact(smoke_run: Path) -> None:
    # best_model.zip is what SB3 writes (a zip with pickles inside); the service must never load it
    with pytest.raises(ArtifactError, match="safetensors"):
        load_artifact(smoke_run / "best_model.zip")


def test_swapped_weights_from_another_policy_are_refused(tmp_path: Path) -> None:
    a = export_policy(_ppo().policy, tmp_path / "a", name="p", version="1")
    model = _ppo()
    with torch.no_grad():
        model.policy.action_net.bias.add_(1.0)
    b = export_policy(model.policy, tmp_path / "b", name="p", version="1")
    # a valid safetensors file of the same architecture, but not the one the manifest vouches for
    (a.parent / "p.safetensors").write_bytes((b.parent / "p.safetensors").read_bytes())
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(a)


def test_exported_files_are_readable_by_the_service_user(tmp_path: Path) -> None:
    import stat

    manifest = export_policy(
        TinyFormer(TinyFormerConfig(d_model=16, n_heads=2)), tmp_path, name="p", version="1"
    )
    for path in (manifest, manifest.with_suffix(".safetensors")):
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, f"{path.name} is not group/other readable"


def test_the_same_weights_export_to_the_same_bytes(tmp_path: Path) -> None:
    # the recorded training command reproduces the artifact byte for byte (same sha256), which needs a
    # canonical safetensors header (its metadata map is serialized in arbitrary order)
    model = TinyFormer(TinyFormerConfig(d_model=16, n_heads=2))
    digests = set()
    for i in range(4):
        m = export_policy(model, tmp_path / str(i), name="p", version="1")
        digests.add(load_artifact(m).manifest.weights.sha256)
    assert len(digests) == 1
