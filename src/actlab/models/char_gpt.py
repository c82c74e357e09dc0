"""A character-level GPT in the style of nanoGPT (Radford et al. 2019; Karpathy's nanoGPT).

    x = wte(idx) + wpe(pos)                   (B, T, D)
    x = x + Attn(LN(x))                       causal multi-head self-attention
    x = x + MLP(LN(x))                        MLP: fc (D -> 4D), act, proj (4D -> D)
    logits = LN(x) @ wte.T                    (B, T, vocab)   (weights tied)

The activation sits in the MLP blocks (where GPT-2 has GELU and the EAFO paper put CRReLU),
one instance per block. Residual projections use the GPT-2 init std 0.02/sqrt(2 n_layer).

Layer slots (timm-style; specs of :mod:`actlab.layers` or factories): ``act_layer`` (default
gelu), ``norm_layer`` (default ``layernorm(bias=cfg.bias)``: every LN above), ``mlp_layer``
(default: the GPT-2 block with its parameter names ``c_fc``/``c_proj``; a registered block
such as ``mlp`` or ``glu`` has its own names) and ``attn_score`` (default softmax through the
fused causal ``scaled_dot_product_attention``; another function sees the causal mask).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actlab.layers import LayerSpec
from actlab.models._act import ActLayer, make_act, make_layer
from actlab.models.vit import MLP_KINDS, NORM_KINDS, make_score, multi_head

__all__ = ["CharGPT", "GPTConfig"]


@dataclass
class GPTConfig:
    vocab_size: int = 96
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {self.vocab_size}")


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, attn_score: LayerSpec | None = None) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)
        self.score = make_score(attn_score)  # None (softmax) adds no module

    def forward(self, x: Tensor) -> Tensor:
        p = self.dropout if self.training else 0.0
        y = multi_head(self.c_attn(x), self.n_head, self.score, p, causal=True)  # (B, T, D)
        return self.resid_drop(self.c_proj(y))


class MLP(nn.Module):
    """The GPT-2 MLP block: c_fc (D -> rD), act, c_proj (rD -> D), dropout."""

    def __init__(self, cfg: GPTConfig, act: ActLayer) -> None:
        super().__init__()
        hidden = int(cfg.mlp_ratio * cfg.n_embd)
        self.c_fc = nn.Linear(cfg.n_embd, hidden, bias=cfg.bias)
        self.act = make_act(act)
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    def __init__(
        self,
        cfg: GPTConfig,
        act: ActLayer,
        norm_layer: LayerSpec,
        mlp_layer: LayerSpec | None = None,
        attn_score: LayerSpec | None = None,
    ) -> None:
        super().__init__()
        d = cfg.n_embd
        self.ln_1 = make_layer(norm_layer, "norm_layer", NORM_KINDS, num_features=d)
        self.attn = CausalSelfAttention(cfg, attn_score)
        self.ln_2 = make_layer(norm_layer, "norm_layer", NORM_KINDS, num_features=d)
        if mlp_layer is None:
            self.mlp: nn.Module = MLP(cfg, act)
        else:
            self.mlp = make_layer(
                mlp_layer, "mlp_layer", MLP_KINDS,
                in_features=d, hidden_features=int(cfg.mlp_ratio * d), out_features=d,
                act_layer=act, drop=cfg.dropout, bias=cfg.bias,
            )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class CharGPT(nn.Module):
    """The char-level GPT; ``act_layer`` and the ``*_layer``/``attn_score`` slots: see above."""

    layer_slots = ("norm_layer", "mlp_layer", "attn_score")

    def __init__(
        self,
        cfg: GPTConfig,
        act_layer: ActLayer = "gelu",
        *,
        norm_layer: LayerSpec | None = None,
        mlp_layer: LayerSpec | None = None,
        attn_score: LayerSpec | None = None,
    ) -> None:
        super().__init__()
        norm = norm_layer if norm_layer is not None else f"layernorm(bias={cfg.bias})"
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            Block(cfg, act_layer, norm, mlp_layer, attn_score) for _ in range(cfg.n_layer)
        )
        self.ln_f = make_layer(norm, "norm_layer", NORM_KINDS, num_features=cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith(("c_proj.weight", "mlp.fc2.weight")) or (
                ".mlp.experts." in name and name.endswith(".fc2.weight")  # MoE experts
            ):  # residual projections
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx: Tensor) -> Tensor:
        B, T = idx.shape
        if T > self.cfg.block_size:
            raise ValueError(
                f"sequence length {T} exceeds block_size {self.cfg.block_size}; crop the input "
                "or build the model with a larger block_size"
            )
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, D)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))  # (B, T, vocab)

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0) -> Tensor:
        """Sample ``max_new_tokens`` continuations of ``idx`` (B, T) -> (B, T + new)."""
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.cfg.block_size :])[:, -1, :] / max(temperature, 1e-6)
            nxt = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)  # (B, 1)
            idx = torch.cat([idx, nxt], dim=1)
        return idx
