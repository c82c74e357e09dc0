"""Vision Transformer, nanoGPT-style (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words").

    x = PatchEmbed(img)                     (B, N, D)   N = (H/p)(W/p) patches, conv p x p / p
    x = [cls; x] + pos                      (B, N+1, D)
    x = x + DropPath(Attn(LN(x)))           pre-norm blocks, multi-head self-attention
    x = x + DropPath(MLP(LN(x)))            MLP: fc1 (D -> rD), act, fc2 (rD -> D)
    logits = Head(LN(x)[:, 0])              (B, num_classes)

The activation sits only in the MLP blocks, as in the EAFO paper's experiments, and each
block builds its own instance through :func:`actlab.create_activation` (so a CRReLU gets one
ε per block). Stochastic depth (Huang et al. 2016) rises linearly from 0 to ``drop_path``.

Layer slots (timm-style; specs of :mod:`actlab.layers` or factories): ``act_layer`` (the
activation, default gelu), ``norm_layer`` (default ``layernorm``: every LN above),
``mlp_layer`` (default ``mlp``: fc1 -> act -> fc2; e.g. ``glu``) and ``attn_score`` (default
``softmax``, computed by the fused ``scaled_dot_product_attention``; another score function
gets the scaled scores and its weights multiply v).

``vit_tiny_patch4_32`` is the CIFAR configuration of the EAFO authors' code base (embed 192,
depth 12, heads 3, MLP ratio 4, drop-path 0.1); the ``*_28`` presets are small enough to train
on Fashion-MNIST in minutes on 2 CPU cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actlab.layers import LayerSpec, Mlp, Softmax
from actlab.models._act import ActLayer, make_layer

__all__ = ["ViT", "ViTConfig", "DropPath", "Mlp", "attention", "make_score", "multi_head"]

NORM_KINDS = ("norm", "basic")
MLP_KINDS = ("mlp", "basic")
SCORE_KINDS = ("attn_score",)


@dataclass
class ViTConfig:
    img_size: int = 32
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 10
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    drop_path: float = 0.1
    dropout: float = 0.0
    qkv_bias: bool = True

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise ValueError(
                f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}; "
                "pick a patch size that divides the image (e.g. 4 or 7 for 28x28, 4 or 8 for 32x32)"
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability p, scale by 1/(1-p)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def attention(
    q: Tensor, k: Tensor, v: Tensor, score: nn.Module | None, dropout: float, causal: bool = False
) -> Tensor:
    """Multi-head attention of (B, h, N, d) tensors; ``score=None`` is the fused softmax."""
    if score is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal)
    s = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, h, Nq, Nk)
    mask = None
    if causal:
        n_q, n_k = s.shape[-2:]
        mask = torch.ones(n_q, n_k, dtype=torch.bool, device=s.device).tril()
    p = score(s, mask)  # (B, h, Nq, Nk)
    if dropout > 0:
        p = F.dropout(p, dropout)
    return p @ v  # (B, h, Nq, d)


def multi_head(
    qkv: Tensor, n_head: int, score: nn.Module | None, dropout: float, causal: bool = False
) -> Tensor:
    """(B, N, 3D) packed q, k, v -> (B, N, D): :func:`attention` over ``n_head`` heads."""
    B, N, D = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
    q, k, v = qkv.split(D, dim=2)  # 3 x (B, N, D)
    q = q.view(B, N, n_head, D // n_head).transpose(1, 2)  # (B, h, N, d)
    k = k.view(B, N, n_head, D // n_head).transpose(1, 2)
    v = v.view(B, N, n_head, D // n_head).transpose(1, 2)
    y = attention(q, k, v, score, dropout, causal)  # (B, h, N, d)
    return y.transpose(1, 2).reshape(B, N, D)


def make_score(spec: LayerSpec | None) -> nn.Module | None:
    """The attention-score module of ``spec``; None for softmax (the fused kernel)."""
    if spec is None:
        return None
    module = make_layer(spec, "attn_score", SCORE_KINDS)
    return None if type(module) is Softmax else module


class Attention(nn.Module):
    def __init__(self, cfg: ViTConfig, attn_score: LayerSpec | None = None) -> None:
        super().__init__()
        self.n_head = cfg.num_heads
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim, bias=cfg.qkv_bias)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.dropout = cfg.dropout
        self.score = make_score(attn_score)  # None (softmax) adds no module

    def forward(self, x: Tensor) -> Tensor:
        p = self.dropout if self.training else 0.0
        return self.proj(multi_head(self.qkv(x), self.n_head, self.score, p))


class Block(nn.Module):
    def __init__(
        self,
        cfg: ViTConfig,
        act_layer: ActLayer,
        drop_path: float,
        norm_layer: LayerSpec = "layernorm",
        mlp_layer: LayerSpec = "mlp",
        attn_score: LayerSpec | None = None,
    ) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = make_layer(norm_layer, "norm_layer", NORM_KINDS, num_features=d)
        self.attn = Attention(cfg, attn_score)
        self.norm2 = make_layer(norm_layer, "norm_layer", NORM_KINDS, num_features=d)
        self.mlp = make_layer(
            mlp_layer, "mlp_layer", MLP_KINDS,
            in_features=d, hidden_features=int(d * cfg.mlp_ratio), out_features=d,
            act_layer=act_layer, drop=cfg.dropout, bias=True,
        )  # fmt: skip
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    """A plain ViT classifier with a class token and learned position embeddings.

    ``act_layer``, ``norm_layer``, ``mlp_layer`` and ``attn_score`` are the layer slots (see
    the module docstring); None means the default.
    """

    layer_slots = ("norm_layer", "mlp_layer", "attn_score")

    def __init__(
        self,
        cfg: ViTConfig,
        act_layer: ActLayer = "gelu",
        *,
        norm_layer: LayerSpec | None = None,
        mlp_layer: LayerSpec | None = None,
        attn_score: LayerSpec | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer if norm_layer is not None else "layernorm"
        mlp_layer = mlp_layer if mlp_layer is not None else "mlp"
        self.cfg = cfg
        n_patches = (cfg.img_size // cfg.patch_size) ** 2
        self.patch_embed = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + 1, cfg.embed_dim))
        self.pos_drop = nn.Dropout(cfg.dropout)
        rates = (
            torch.linspace(0, cfg.drop_path, cfg.depth, device="cpu").tolist()
            if cfg.depth > 1
            else [0.0]
        )
        self.blocks = nn.ModuleList(
            Block(cfg, act_layer, r, norm_layer, mlp_layer, attn_score) for r in rates
        )
        self.norm = make_layer(norm_layer, "norm_layer", NORM_KINDS, num_features=cfg.embed_dim)
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes)
        self.apply(self._init_weights)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, img: Tensor) -> Tensor:
        B, C, H, W = img.shape
        if H != self.cfg.img_size or W != self.cfg.img_size or C != self.cfg.in_chans:
            raise ValueError(
                f"ViT expects images of shape (B, {self.cfg.in_chans}, {self.cfg.img_size}, "
                f"{self.cfg.img_size}), got {tuple(img.shape)}; build it with matching "
                "in_chans/img_size"
            )
        x = self.patch_embed(img).flatten(2).transpose(1, 2)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)  # (B, N+1, D)
        x = self.pos_drop(x + self.pos_embed)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])  # (B, num_classes)
