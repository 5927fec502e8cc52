"""TinyFormer in torch (agents/tinyformer.py, what SB3 trains): shapes, masking, heads, weight layout.

The numpy runtime that serves it is tested against this module in tests/client/test_policy_runtime.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from agents.tinyformer import TinyFormer, TinyFormerConfig, TinyFormerEncoder
from client.policy import weight_shapes
from client.protocol import DEFAULT_GRID


def _obs(batch: int, cfg: TinyFormerConfig, pad: int = 0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(batch, cfg.obs_size, generator=g)
    for i in range(cfg.window):
        obs[:, i * cfg.token_dim] = 0.0 if i < pad else 1.0
    return obs


def test_shapes_and_heads() -> None:
    torch.manual_seed(0)
    model = TinyFormer().eval()
    cfg = model.config
    obs = _obs(5, cfg)
    assert model.features(obs).shape == (5, cfg.d_model)
    logits, value = model(obs)
    assert logits.shape == (5, sum(DEFAULT_GRID.nvec)) and value.shape == (5,)
    assert isinstance(model.action_net, nn.Linear) and isinstance(model.value_net, nn.Linear)
    a = model.act(obs)
    assert a.shape == (5, 3) and a.dtype == torch.int64
    for row in a:
        DEFAULT_GRID.check(DEFAULT_GRID.setting(row))
    assert model.act(obs[0]).shape == (3,)
    with pytest.raises(ValueError, match="features"):
        model.act(torch.zeros(1, cfg.obs_size + 1))


def test_padding_rows_do_not_change_the_features() -> None:
    torch.manual_seed(1)
    model = TinyFormer().eval()
    cfg = model.config
    obs = _obs(3, cfg, pad=5)
    junk = obs.clone()
    junk[:, 1 : 5 * cfg.token_dim : 1] = torch.randn(3, 5 * cfg.token_dim - 1)  # scribble on padding rows
    for i in range(5):
        junk[:, i * cfg.token_dim] = 0.0  # ...keeping them marked as padding
    with torch.no_grad():
        assert torch.allclose(model.features(obs), model.features(junk), atol=1e-6)


def test_sampling_is_reproducible_with_a_generator() -> None:
    model = TinyFormer().eval()
    obs = _obs(4, model.config)
    a = model.act(obs, deterministic=False, generator=torch.Generator().manual_seed(3))
    b = model.act(obs, deterministic=False, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_from_parts_copies_encoder_and_sb3_style_heads() -> None:
    cfg = TinyFormerConfig(d_model=32, n_heads=4, window=4)
    encoder = TinyFormerEncoder(cfg)
    action_net, value_net = nn.Linear(32, sum(cfg.nvec)), nn.Linear(32, 1)
    model = TinyFormer.from_parts(encoder, action_net, value_net)
    obs = _obs(2, cfg)
    with torch.no_grad():
        assert torch.allclose(model.action_net(model.features(obs)), action_net(encoder(obs)))
        assert torch.allclose(model(obs)[1], value_net(encoder(obs)).squeeze(-1))


def test_config_validation_and_roundtrip() -> None:
    cfg = TinyFormerConfig(window=4, d_model=48, n_heads=3)
    assert TinyFormerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="multiple of n_heads"):
        TinyFormerConfig(d_model=50, n_heads=4)
    with pytest.raises(ValueError, match="window"):
        TinyFormerConfig(window=9)
    with pytest.raises(ValueError, match="unknown TinyFormerConfig keys"):
        TinyFormerConfig.from_dict({"width": 3})


@pytest.mark.parametrize(
    "cfg", [TinyFormerConfig(), TinyFormerConfig(d_model=16, n_heads=2, n_layers=1, window=3)]
)
def test_state_dict_is_the_runtime_weight_layout(cfg: TinyFormerConfig) -> None:
    """One artifact format: the torch module's tensors are exactly the runtime's ``weight_shapes``."""
    model = TinyFormer(cfg)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == weight_shapes(cfg)
    again = TinyFormer.from_weights(cfg, model.weights())
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k
