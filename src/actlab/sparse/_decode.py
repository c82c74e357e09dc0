"""A lean greedy decode loop for Llama-family causal LMs: static KV cache, minimal Python.

At batch 1 a small model spends much of each ``model.generate`` step in Python (cache
objects, masks, kwargs plumbing, logits processors): SmolLM2-135M runs 30 layers of seven
small matrix-vector products. :class:`LeanDecoder` runs the same modules (so sparsified
projections, their kernels and any other surgery take effect) with only what one greedy step
needs::

    dec = LeanDecoder(model, max_len=192)
    ids = dec.generate(prompt_ids, max_new_tokens=128)      # [1, T + 128], greedy

Per layer: ``h += o_proj(attn(rope(q_proj(x)), k, v))`` with ``x = input_layernorm(h)``, then
``h += mlp(post_attention_layernorm(h))`` (Llama, Mistral, Qwen2, SmolLM2); Gemma 3 adds its
q/k RMSNorms, the norms around attention and MLP outputs (``post_attention_layernorm``,
``pre_feedforward_layernorm``, ``post_feedforward_layernorm``), per-layer-type rotary tables
and sliding-window layers (key j is visible from query i when ``0 <= i - j < window``).
Attention is ``F.scaled_dot_product_attention`` over a preallocated ``[layers, kv_heads,
max_len, head_dim]`` cache (GQA through ``enable_gqa``). The final logit soft-capping of Gemma
is monotone, so greedy tokens do not need it. Batch 1, no sampling: the loop is a measuring
instrument for decode speed, checked against ``model.generate`` token for token in the tests.

Native step (``native=None``, the default: when the model allows it; ``True``: required;
``False``: never): each single-position forward runs every block in one C++ call
(:mod:`actlab.sparse._decode_native`, ``csrc/decode_step.cpp``) over the same weights (the
packed kernel layouts of :func:`~actlab.sparse.use_kernels` for sparse sites, the modules'
float32 weights for dense ones) and the same KV cache; the prefill keeps the module path.
``native_reason`` says why a model keeps the module path. Rotated models (TEAL
``rotation="pca"``, WINA's orthogonalisation) carry a change of basis ``h <- h R`` as a forward
pre-hook of each block; both paths apply it themselves (the loop does not call the blocks).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from actlab.sparse._decode_native import NativeStack, build_native
from actlab.sparse._state import SparseError

__all__ = ["LeanDecoder"]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class LeanDecoder:
    """Greedy decoding of a Llama / Gemma-3 causal LM with a static KV cache (batch 1)."""

    model: Any  # a transformers causal LM (untyped: its submodules are read by name)
    inner: Any
    layers: Any

    def __init__(self, model: nn.Module, max_len: int, *, native: bool | None = None) -> None:
        inner: Any = getattr(model, "model", None)
        layers = getattr(inner, "layers", None)
        if inner is None or not isinstance(layers, nn.ModuleList) or not hasattr(model, "lm_head"):
            raise SparseError(
                f"LeanDecoder needs a Llama-family causal LM (model.model.layers, lm_head); "
                f"got {type(model).__name__}"
            )
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 2:
            raise SparseError(f"max_len must be an int >= 2, got {max_len!r}")
        cfg: Any = model.config
        if getattr(cfg, "attn_logit_softcapping", None):
            raise SparseError("LeanDecoder does not implement attention logit soft-capping")
        self.model, self.inner, self.layers = model, inner, layers
        self.max_len = max_len
        self.gemma = hasattr(layers[0], "pre_feedforward_layernorm")
        attn0: Any = layers[0].self_attn
        self.head_dim = int(attn0.head_dim)
        self.n_heads = int(cfg.num_attention_heads)
        self.n_kv = int(cfg.num_key_value_heads)
        self.types: list[str] = list(
            getattr(cfg, "layer_types", None) or ["full_attention"] * len(layers)
        )
        self.windows = [
            int(cfg.sliding_window) if t == "sliding_attention" else 0 for t in self.types
        ]
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        shape = (len(layers), self.n_kv, max_len, self.head_dim)
        self.k = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.v = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.rope = self._rope_tables()
        self.profile = False  # True: label the stages for torch.profiler
        self.native: NativeStack | None = None
        self.native_reason = "not requested (native=False)"
        if native is None or native:
            self.native, self.native_reason = build_native(self)
            if native and self.native is None:
                raise SparseError(f"the native decode step cannot run: {self.native_reason}")

    @torch.no_grad()
    def _rope_tables(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """cos, sin ``[max_len, head_dim]`` per layer type, from the model's own rotary module."""
        pos = torch.arange(self.max_len, device=self.device)[None]  # [1, max_len]
        dummy = torch.zeros(1, device=self.device, dtype=self.dtype)
        rot = self.inner.rotary_emb
        out = {}
        for t in set(self.types):
            cos, sin = rot(dummy, pos, t) if self.gemma else rot(dummy, pos)
            out[t] = (cos[0], sin[0])
        return out

    def _stage(self, name: str) -> contextlib.AbstractContextManager[Any]:
        if self.profile:
            return torch.profiler.record_function(name)
        return contextlib.nullcontext()

    def _attend(self, i: int, q: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """Attention of q ``[1, heads, T, hd]`` (positions start..end-1) over the cache."""
        w = self.windows[i]
        t = end - start
        lo = max(0, end - w) if (w and t == 1) else 0
        k = self.k[i : i + 1, :, lo:end]  # [1, kv, S, hd]
        v = self.v[i : i + 1, :, lo:end]
        attn: Any = self.layers[i].self_attn
        if t == 1:
            mask = None
            causal = False
        elif start == 0 and (not w or end <= w):
            mask, causal = None, True
        else:  # several positions after others, or a window inside the prompt: explicit mask
            qi = torch.arange(start, end, device=self.device)[:, None]
            kj = torch.arange(lo, end, device=self.device)[None]
            mask = (kj <= qi) & ((qi - kj < w) if w else True)
            causal = False
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, scale=attn.scaling, enable_gqa=True
        )

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        """Run positions ``start .. start + T - 1`` (ids ``[1, T]``); logits of the last one."""
        t = ids.shape[-1]
        end = start + t
        if end > self.max_len:
            raise SparseError(f"sequence of {end} tokens exceeds max_len={self.max_len}")
        with self._stage("embed"):
            h = self.inner.embed_tokens(ids)  # [1, T, d]
        if t == 1 and self.native is not None:
            with self._stage("native step"):
                h = self.native.step(h.reshape(-1), start).view(1, 1, -1)  # [1, 1, d]
            return self._head(h)
        for i, layer in enumerate(self.layers):
            rotation = getattr(layer, "wina_rotation", None)  # rotated models: the block's
            if rotation is not None:  # forward pre-hook, which this loop does not call
                h = h @ rotation.to(h.dtype)
            a = layer.self_attn
            cos, sin = self.rope[self.types[i]]
            cos, sin = cos[start:end], sin[start:end]  # [T, hd]
            with self._stage("norm"):
                x = layer.input_layernorm(h)
            with self._stage("attn.proj"):
                q = a.q_proj(x).view(1, t, self.n_heads, self.head_dim).transpose(1, 2)
                k = a.k_proj(x).view(1, t, self.n_kv, self.head_dim).transpose(1, 2)
                v = a.v_proj(x).view(1, t, self.n_kv, self.head_dim).transpose(1, 2)
            with self._stage("attn.core"):
                if self.gemma:
                    q, k = a.q_norm(q), a.k_norm(k)
                q = q * cos + _rotate_half(q) * sin  # [1, heads, T, hd]
                k = k * cos + _rotate_half(k) * sin
                self.k[i, :, start:end] = k[0]
                self.v[i, :, start:end] = v[0]
                o = self._attend(i, q, start, end)  # [1, heads, T, hd]
                o = o.transpose(1, 2).reshape(1, t, self.n_heads * self.head_dim)
            with self._stage("attn.proj"):
                o = a.o_proj(o)
            if self.gemma:
                with self._stage("norm"):
                    o = layer.post_attention_layernorm(o)
                    h = h + o
                    x = layer.pre_feedforward_layernorm(h)
                with self._stage("mlp"):
                    m = layer.mlp(x)
                with self._stage("norm"):
                    h = h + layer.post_feedforward_layernorm(m)
            else:
                h = h + o
                with self._stage("norm"):
                    x = layer.post_attention_layernorm(h)
                with self._stage("mlp"):
                    h = h + layer.mlp(x)
        return self._head(h)

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        """Logits ``[vocab]`` of the last position of ``h`` ``[1, T, d]``."""
        with self._stage("norm"):
            last = self.inner.norm(h[:, -1:])
        with self._stage("lm_head"):
            return self.model.lm_head(last)[0, -1]  # [vocab]

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy continuation of ``ids`` ``[1, T]``: ``[1, T + max_new_tokens]`` (no EOS stop), on
        ``ids``' device."""
        if ids.ndim != 2 or ids.shape[0] != 1:
            raise SparseError(
                f"LeanDecoder decodes batch 1: ids must be [1, T], got {tuple(ids.shape)}"
            )
        out = list(ids[0].tolist())
        tok = ids.to(self.device)
        start = 0
        for _ in range(max_new_tokens):
            logits = self.forward(tok, start)
            start += tok.shape[-1]
            nxt = int(logits.argmax())
            out.append(nxt)
            tok = torch.tensor([[nxt]], device=self.device)
        self.flush_counts()
        return torch.tensor([out], dtype=torch.long, device=ids.device)

    def flush_counts(self) -> None:
        """Add what the native step counted (entries seen / zeroed per sparse site) to the
        modules' counters; :meth:`generate` does this at its end."""
        if self.native is not None:
            self.native.flush_counts()

    @contextlib.contextmanager
    def profiled(self) -> Iterator[None]:
        """Label the stages (embed, norm, attn.proj, attn.core, mlp, lm_head) for the profiler."""
        self.profile = True
        try:
            yield
        finally:
            self.profile = False
