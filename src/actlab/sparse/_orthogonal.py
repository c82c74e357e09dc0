"""WINA's column orthogonalisation: fold the RMSNorm weights, then rotate the residual stream.

WINA's top-k of ``|x_i| * ||W[:, i]||_2`` is the best k-term approximation of ``W x`` when
the columns of ``W`` are orthogonal (arXiv 2505.19427, section 4). A pre-norm Llama block is
invariant under an orthogonal change of basis ``Q`` of the residual stream once the RMSNorm
weights are folded into the projections that read the norm (SliceGPT's invariance:
``RMSNorm(h Q) = RMSNorm(h) Q`` for a weightless RMSNorm):

- every RMSNorm weight gamma moves into its readers, ``W <- W diag(gamma)``, and becomes 1;
- each block l gets a basis ``Q_l`` from the SVD ``W_ref diag(gamma) = U S V^T`` of its
  reference projection (``k_proj`` or ``gate_proj``): ``Q_l = V``, so ``W_ref Q_l = U S`` has
  orthogonal columns;
- readers of the residual (q, k, v, gate, up) become ``W Q_l``, writers (o, down) ``Q_l^T W``;
  the embedding rows ``E Q_0``, the LM head ``W_lm diag(gamma_final) Q_last`` (untied from
  the embedding if they were tied);
- between blocks the residual changes basis, ``h <- h Q_{l-1}^T Q_l``: a non-persistent
  buffer and a forward pre-hook on each block after the first.

The dense model computes the same function (to float rounding). One basis per block, so only
the reference projection of each block is column-orthogonal (the paper rotates attention and
MLP separately, which needs a second change of basis inside the block). Supported: pre-norm
Llama-style blocks with ``input_layernorm`` / ``post_attention_layernorm`` RMSNorms whose
output is ``weight * x / rms(x)`` (Llama, Mistral, Qwen2, SmolLM2); not Gemma (``1 + weight``
and sandwich norms). The hooks are not saved by ``save_pretrained``: apply the transform to
the loaded model again (it is deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from actlab.sparse._modules import SparseLinear
from actlab.sparse._sites import Block, find_blocks
from actlab.sparse._state import SparseError

__all__ = ["Orthogonalized", "orthogonalize"]

REFERENCES = ("k_proj", "gate_proj")
_READ_ATTN = ("q_proj", "k_proj", "v_proj")
_READ_MLP = ("gate_proj", "up_proj")
_NORMS = ("input_layernorm", "post_attention_layernorm")


@dataclass
class Orthogonalized:
    """What :func:`orthogonalize` did: the reference projection and each block's basis."""

    reference: str
    bases: dict[str, torch.Tensor]  # block path -> Q_l (float64, [d, d])


def _rmsnorm(module: Any, what: str) -> nn.Module:
    if (
        not isinstance(module, nn.Module)
        or not type(module).__name__.endswith("RMSNorm")
        or type(module).__name__.startswith("Gemma")
        or not isinstance(getattr(module, "weight", None), torch.Tensor)
        or getattr(module, "bias", None) is not None
    ):
        raise SparseError(
            f"WINA orthogonalisation needs a Llama-style RMSNorm at {what}, found "
            f"{type(module).__name__}; it supports Llama, Mistral, Qwen2 and SmolLM2 (not Gemma)"
        )
    return module


def _block_norms(model: nn.Module, block: Block) -> tuple[nn.Module, nn.Module]:
    layer = model.get_submodule(block.path)
    norms = [n for n, c in layer.named_children() if "norm" in type(c).__name__.lower()]
    if sorted(norms) != sorted(_NORMS):
        raise SparseError(
            f"WINA orthogonalisation needs pre-norm blocks with exactly {' and '.join(_NORMS)}; "
            f"{block.path} has {', '.join(norms) or 'no norms'} (Gemma's sandwich norms are "
            "not rotation invariant)"
        )
    return _rmsnorm(layer.input_layernorm, f"{block.path}.input_layernorm"), _rmsnorm(
        layer.post_attention_layernorm, f"{block.path}.post_attention_layernorm"
    )


def _weight(module: nn.Module) -> torch.Tensor:
    w = getattr(module, "weight", None)
    assert isinstance(w, torch.Tensor)
    return w


def _set(linear: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    with torch.no_grad():
        linear.weight.copy_(weight.to(linear.weight.dtype))
        if bias is not None and linear.bias is not None:
            linear.bias.copy_(bias.to(linear.bias.dtype))


def _linear(model: nn.Module, path: str) -> nn.Linear:
    m = model.get_submodule(path)
    if not isinstance(m, nn.Linear) or isinstance(m, SparseLinear):
        raise SparseError(f"{path} is a {type(m).__name__}; orthogonalise the dense model first")
    return m


def _rotate_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    r = module.wina_rotation
    if args:
        h = args[0]
        return (h @ r.to(h.dtype), *args[1:]), kwargs
    h = kwargs["hidden_states"]
    return args, {**kwargs, "hidden_states": h @ r.to(h.dtype)}


@torch.no_grad()
def orthogonalize(model: nn.Module, reference: str = "k_proj") -> Orthogonalized:
    """Rotate ``model`` in place so that each block's ``reference`` projection has orthogonal
    columns, keeping the dense function (see the module docstring)."""
    if reference not in REFERENCES:
        raise SparseError(
            f"orthogonalisation reference must be one of {', '.join(REFERENCES)}; got {reference!r}"
        )
    blocks = find_blocks(model)
    get_in = getattr(model, "get_input_embeddings", None)
    get_out = getattr(model, "get_output_embeddings", None)
    emb = get_in() if callable(get_in) else None
    head = get_out() if callable(get_out) else None
    final = getattr(getattr(model, "model", None), "norm", None)
    if not isinstance(emb, nn.Embedding) or not isinstance(head, nn.Linear):
        raise SparseError(
            "WINA orthogonalisation needs a causal LM with an nn.Embedding input embedding and "
            "an nn.Linear lm_head (e.g. LlamaForCausalLM)"
        )
    if getattr(model, "actlab_wina_orthogonal", False):
        raise SparseError("the model is already orthogonalised (the transform applies once)")
    final = _rmsnorm(final, "model.norm")
    norms = [_block_norms(model, b) for b in blocks]
    for b in blocks:
        for path in b.projections().values():
            _linear(model, path)
    if head.weight is emb.weight:  # untie: the head gets its own rotated copy
        head.weight = nn.Parameter(emb.weight.detach().clone())
        config = getattr(model, "config", None)
        if config is not None:
            config.tie_word_embeddings = False
    bases: dict[str, torch.Tensor] = {}
    previous: torch.Tensor | None = None
    for b, (n_in, n_post) in zip(blocks, norms):
        lin = {n: _linear(model, p) for n, p in b.projections().items()}
        g_in = _weight(n_in).detach().double()
        g_post = _weight(n_post).detach().double()
        ref_gamma = g_in if reference in _READ_ATTN else g_post
        w_ref = lin[reference].weight.detach().double() * ref_gamma
        q = torch.linalg.svd(w_ref, full_matrices=True).Vh.T.contiguous()
        for n, gamma in [(n, g_in) for n in _READ_ATTN] + [(n, g_post) for n in _READ_MLP]:
            _set(lin[n], (lin[n].weight.detach().double() * gamma) @ q)
        for n in ("o_proj", "down_proj"):
            bias = lin[n].bias
            _set(
                lin[n],
                q.T @ lin[n].weight.detach().double(),
                None if bias is None else q.T @ bias.detach().double(),
            )
        _weight(n_in).fill_(1.0)
        _weight(n_post).fill_(1.0)
        layer = model.get_submodule(b.path)
        if previous is None:
            emb.weight.copy_((emb.weight.detach().double() @ q).to(emb.weight.dtype))
        else:
            layer.register_buffer("wina_rotation", (previous.T @ q).float(), persistent=False)
            layer.register_forward_pre_hook(_rotate_hook, with_kwargs=True)
        bases[b.path] = q
        previous = q
    assert previous is not None
    _set(head, (head.weight.detach().double() * _weight(final).detach().double()) @ previous)
    _weight(final).fill_(1.0)
    setattr(model, "actlab_wina_orthogonal", True)  # noqa: B010 - a marker, not an attribute
    return Orthogonalized(reference, bases)
