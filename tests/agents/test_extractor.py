"""Features extractors: shapes, parameter matching, and that the TinyFormer one is the encoder unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy

from agents.extractor import (
    MLPExtractor,
    TinyFormerExtractor,
    count_parameters,
    mlp_width_for,
    policy_kwargs,
    prefer_setting,
    reinit_extractor,
)
from agents.tinyformer import TinyFormerConfig, TinyFormerEncoder
from client.protocol import DEFAULT_GRID, CompressionSetting, ObservationSpec


def _space(window: int = 8) -> spaces.Box:
    return spaces.Box(-10, 10, shape=(ObservationSpec(window=window).size,), dtype=np.float32)


@pytest.mark.parametrize("window,d_model", [(8, 32), (4, 16)])
def test_tinyformer_extractor_is_the_encoder(window: int, d_model: int) -> None:
    cfg = TinyFormerConfig(window=window, d_model=d_model, n_heads=4)
    fx = TinyFormerExtractor(_space(window), cfg.to_dict())
    assert fx.features_dim == d_model
    obs = torch.randn(5, cfg.obs_size)
    obs[:, :: cfg.token_dim] = 1.0  # mask feature on
    feats = fx(obs)
    assert feats.shape == (5, d_model)
    enc = TinyFormerEncoder(cfg)
    enc.load_state_dict(fx.encoder.state_dict())
    torch.testing.assert_close(enc(obs), feats)


def test_tinyformer_extractor_refuses_a_mismatched_window() -> None:
    with pytest.raises(ValueError, match="same window"):
        TinyFormerExtractor(_space(4), TinyFormerConfig(window=8))


@pytest.mark.parametrize("d_model,n_layers", [(32, 2), (64, 2), (16, 1)])
def test_mlp_matches_the_tinyformer_parameter_count(d_model: int, n_layers: int) -> None:
    cfg = TinyFormerConfig(d_model=d_model, n_layers=n_layers, n_heads=4 if d_model >= 32 else 2)
    mlp = MLPExtractor(_space(), width=0, match_config=cfg)
    target = count_parameters(TinyFormerEncoder(cfg))
    assert abs(count_parameters(mlp) - target) / target < 0.05
    out = mlp(torch.randn(3, cfg.obs_size))
    assert out.shape == (3, mlp.features_dim) and bool((out.abs() <= 1).all())  # tanh features


def test_mlp_width_for_solves_the_parameter_equation() -> None:
    h = mlp_width_for(20_000, 134, n_layers=2)
    assert abs(134 * h + h + h * h + h - 20_000) < 300
    assert mlp_width_for(1350, 134, n_layers=1) == 10
    with pytest.raises(ValueError):
        mlp_width_for(100, 10, n_layers=0)


def test_policy_kwargs_give_linear_heads_on_shared_features() -> None:
    kw = policy_kwargs("tinyformer", TinyFormerConfig())
    assert kw["net_arch"] == {"pi": [], "vf": []} and kw["share_features_extractor"] is True
    assert kw["features_extractor_class"] is TinyFormerExtractor
    with pytest.raises(ValueError, match="choose one of"):
        policy_kwargs("cnn", TinyFormerConfig())  # type: ignore[arg-type]


def test_prefer_setting_makes_the_prior_the_greedy_action_everywhere() -> None:
    torch.manual_seed(0)
    nvec = np.asarray(DEFAULT_GRID.nvec)
    kw = policy_kwargs("tinyformer", TinyFormerConfig())
    policy = ActorCriticPolicy(_space(), spaces.MultiDiscrete(nvec), lambda _: 1e-3, **kw)
    reinit_extractor(policy)
    obs = torch.as_tensor(_space().sample()[None].repeat(64, 0) * np.random.default_rng(0).random((64, 1)))
    prior = list(DEFAULT_GRID.action(CompressionSetting.parse("r0/b8/g0")))
    before = policy.predict(obs.numpy(), deterministic=True)[0]
    assert not (before == prior).all()  # a fresh head has no such preference
    prefer_setting(policy, prior, 3.0)
    after = policy.predict(obs.numpy(), deterministic=True)[0]
    assert (after == np.asarray(prior)).all()
    with pytest.raises(ValueError, match="not a grid index"):
        prefer_setting(policy, [8, 0, 0], 1.0)
    with pytest.raises(ValueError, match="one per head"):
        prefer_setting(policy, prior, (3.0, 1.0))


def test_prefer_setting_takes_one_logit_per_head() -> None:
    kw = policy_kwargs("tinyformer", TinyFormerConfig())
    policy = ActorCriticPolicy(_space(), spaces.MultiDiscrete(DEFAULT_GRID.nvec), lambda _: 1e-3, **kw)
    bias0 = policy.action_net.bias.detach().clone()  # type: ignore[union-attr]
    prior = list(DEFAULT_GRID.action(CompressionSetting.parse("r0/b8/g0")))
    prefer_setting(policy, prior, (3.0, 1.0, 2.0))
    moved = policy.action_net.bias.detach() - bias0  # type: ignore[union-attr]
    offsets = np.cumsum([0, *DEFAULT_GRID.nvec[:-1]])
    assert [float(moved[o + a]) for o, a in zip(offsets, prior, strict=True)] == [3.0, 1.0, 2.0]
    assert float(moved.abs().sum()) == 6.0  # nothing else moved


def test_prefer_setting_on_a_joint_head_raises_the_setting_itself() -> None:
    kw = policy_kwargs("tinyformer", TinyFormerConfig(joint=True))
    policy = ActorCriticPolicy(_space(), spaces.Discrete(DEFAULT_GRID.size), lambda _: 1e-3, **kw)
    bias0 = policy.action_net.bias.detach().clone()  # type: ignore[union-attr]
    prior = list(DEFAULT_GRID.action(CompressionSetting.parse("r64/b4/g0")))
    prefer_setting(policy, prior, (3.0, 1.0, 2.0))
    moved = policy.action_net.bias.detach() - bias0  # type: ignore[union-attr]
    assert float(moved[int(DEFAULT_GRID.ravel(prior))]) == 6.0
    assert float(moved.abs().sum()) == 6.0
