"""Small models for the training backend and the benchmarks (CPU-sized; nanoGPT-style LM and an MLP).

* :class:`ByteGPT` - a byte-level causal transformer LM (vocab 256, pre-LayerNorm blocks, learned positions,
  tied input/output embedding), configured by one :class:`GPTConfig` passed whole.
* :class:`ByteGRU` - a byte-level GRU LM (a second LM family: recurrent, untied head).
* :class:`DigitsMLP` - a two-hidden-layer MLP classifier for the 8x8 digits (64 -> 10).
* :func:`build_model` - a preset by name with a seeded initialization.

Presets (parameter counts with tied embeddings; fwd+bwd+AdamW step times measured on 2 shared CPU cores, one
torch thread, batch 16 x block_size, idle -> busy machine):

=============  =======  ======  ======  =====  =========  ==================
name           n_layer  n_head  n_embd  block  params     step time
=============  =======  ======  ======  =====  =========  ==================
``lm-tiny``    2        2       64      64     0.12 M     15-50 ms
``lm-small``   4        4       128     128    0.84 M     0.1-1.3 s (16x64: ~2x less)
``lm-medium``  6        6       192     256    2.8 M      0.35 s and up: GPU or patience
``digits-mlp`` -        -       -       -      0.03 M     64 -> 128 -> 128 -> 10
=============  =======  ======  ======  =====  =========  ==================

Two GPU presets: ``gpt-85m`` (12 x 768, the GPU bench's byte GPT, whose traces the surrogate was fitted on)
and ``gpt-wide-100m`` (8 layers x 1024, 16 heads, 101 M parameters): a held-out GPU job, in no trace, workload
or training split, for evaluating a policy on a job it has never seen (``mango demo --model gpt-wide-100m``).

Every weight matrix of the LMs except LayerNorm and biases has at least 4096 entries, so MangoAdamW (with its
default ``min_compress_numel=4096``) compresses all of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GRU_PRESETS",
    "PRESETS",
    "ByteGPT",
    "ByteGRU",
    "DigitsMLP",
    "GPTConfig",
    "GRUConfig",
    "build_model",
    "model_names",
]


@dataclass(frozen=True)
class GPTConfig:
    """Shape of a :class:`ByteGPT`.

    :ivar vocab_size: token alphabet; 256 for raw bytes.
    :ivar n_layer: transformer blocks.
    :ivar n_head: attention heads per block; must divide ``n_embd``.
    :ivar n_embd: model width.
    :ivar block_size: longest context (positions learned up to this length).
    :ivar dropout: dropout probability (0 for the short CPU runs here: it only adds noise).
    :ivar bias: biases in Linear layers and LayerNorm.
    """

    vocab_size: int = 256
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 64
    block_size: int = 64
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head}")
        if min(self.vocab_size, self.n_layer, self.n_head, self.n_embd, self.block_size) < 1:
            raise ValueError(f"every size in {self} must be >= 1")


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape  # (B, T, C)
        q, k, v = self.c_attn(x).split(c, dim=2)  # 3 x (B, T, C)
        q = q.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)  # (B, H, T, C/H)
        k = k.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)  # (B, H, T, C/H)
        v = v.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)  # (B, H, T, C/H)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, C/H)
        y = y.transpose(1, 2).contiguous().view(b, t, c)  # (B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.c_proj(F.gelu(self.c_fc(x))))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class ByteGPT(nn.Module):
    """Byte-level causal transformer LM: ``forward(idx (B, T) int64) -> logits (B, T, vocab)``.

    ``loss(idx, targets)`` is the mean next-byte cross entropy in nats (``ln 256 = 5.55`` at chance).
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying: one (vocab, C) matrix
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        _, t = idx.shape  # (B, T)
        if t > self.cfg.block_size:
            raise ValueError(f"sequence length {t} exceeds block_size={self.cfg.block_size}")
        pos = torch.arange(t, device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        return self.lm_head(self.ln_f(x))  # (B, T, vocab)

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross entropy (nats per byte) of predicting ``targets`` (B, T) from ``idx`` (B, T)."""
        logits = self(idx)  # (B, T, V)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))

    def mean_loss(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """Mean of :meth:`loss` over fixed ``(idx, targets)`` batches (moved to the model's device), in eval
        mode and without gradients; the training mode is restored. The validation loss of the demo and of the
        benchmarks that train a byte LM."""
        device = self.lm_head.weight.device
        was_training = self.training
        self.eval()
        with torch.no_grad():
            total = sum(float(self.loss(x.to(device), y.to(device))) for x, y in batches)
        self.train(was_training)
        return total / len(batches)


@dataclass(frozen=True)
class GRUConfig:
    """Shape of a :class:`ByteGRU`.

    :ivar n_layer: stacked GRU layers.
    :ivar n_embd: embedding and hidden width.
    :ivar block_size: the longest window the workloads feed it (a GRU has no position table; the field keeps
        the LMs' interface).
    """

    vocab_size: int = 256
    n_layer: int = 1
    n_embd: int = 96
    block_size: int = 64


class ByteGRU(nn.Module):
    """Byte-level recurrent LM (a second model family beside :class:`ByteGPT`): embedding, a stacked GRU,
    LayerNorm and an untied head; ``forward(idx (B, T)) -> logits (B, T, vocab)``, the same ``loss`` and
    ``mean_loss`` as :class:`ByteGPT`. Its weight matrices are the GRU's gate stacks (``3 n_embd`` rows)."""

    def __init__(self, cfg: GRUConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.rnn = nn.GRU(cfg.n_embd, cfg.n_embd, num_layers=cfg.n_layer, batch_first=True)
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        nn.init.normal_(self.wte.weight, mean=0.0, std=0.02)
        nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        _, t = idx.shape  # (B, T)
        if t > self.cfg.block_size:
            raise ValueError(f"sequence length {t} exceeds block_size={self.cfg.block_size}")
        h, _ = self.rnn(self.wte(idx))  # (B, T, C)
        return self.lm_head(self.ln_f(h))  # (B, T, vocab)

    loss = ByteGPT.loss
    mean_loss = ByteGPT.mean_loss


class DigitsMLP(nn.Module):
    """``forward(x (B, 64) float) -> logits (B, 10)``; ``loss(x, y)`` is the mean cross entropy."""

    def __init__(self, n_in: int = 64, hidden: int = 128, n_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_in, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 64) -> (B, 10)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self(x), y)


#: LM presets by name (see the module docstring's table).
PRESETS: dict[str, GPTConfig] = {
    "lm-tiny": GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=64),
    "lm-small": GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=128),
    "lm-medium": GPTConfig(n_layer=6, n_head=6, n_embd=192, block_size=256),
    # the GPU bench's byte GPT (benchmarks/gpu.py): 85 M parameters, for GPU traces and the GPU demo
    "gpt-85m": GPTConfig(n_layer=12, n_head=12, n_embd=768, block_size=256),
    # held out: a wider, shallower byte GPT that no trace, workload or training episode has seen
    "gpt-wide-100m": GPTConfig(n_layer=8, n_head=16, n_embd=1024, block_size=256),
}
#: Recurrent LM presets by name.
GRU_PRESETS: dict[str, GRUConfig] = {
    "gru-tiny": GRUConfig(n_layer=1, n_embd=96, block_size=64),
}
_OTHER = ("digits-mlp", *GRU_PRESETS)


def model_names() -> list[str]:
    """Every name :func:`build_model` accepts."""
    return [*PRESETS, *_OTHER]


def build_model(name: str, seed: int = 0, **overrides: object) -> nn.Module:
    """Build a preset with a seeded initialization (the global RNG is left untouched).

    :param name: one of :func:`model_names`.
    :param seed: initialization seed; the same seed gives bit-identical weights.
    :param overrides: fields of :class:`GPTConfig` to change for an LM preset (e.g. ``block_size=32``).
    """
    if name not in PRESETS and name not in _OTHER:
        raise ValueError(f"unknown model {name!r}; choose one of {model_names()}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "digits-mlp":
            if overrides:
                raise ValueError(f"digits-mlp takes no overrides, got {sorted(overrides)}")
            return DigitsMLP()
        if name in GRU_PRESETS:
            return ByteGRU(replace(GRU_PRESETS[name], **overrides))  # type: ignore[arg-type]
        return ByteGPT(replace(PRESETS[name], **overrides))  # type: ignore[arg-type]
