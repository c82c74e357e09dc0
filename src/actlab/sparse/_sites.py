"""Where sparsity goes in a Llama-family model, and how calibration activations are captured.

A *block* is a decoder layer holding an attention module with ``q_proj, k_proj, v_proj,
o_proj`` and a gated MLP with ``gate_proj, up_proj, down_proj`` (and ``act_fn``), as in
Llama, Mistral, Qwen2/3, SmolLM2 and Gemma 1-3. :func:`find_blocks` finds them by name; a
model without them gets a one-line :class:`SparseError`.

TEAL's inputs: q, k and v read the same attention input, gate and up the same MLP input; o
and down have their own. :data:`INPUT_OF` names the shared input of each projection.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from actlab.sparse._state import SparseError

__all__ = [
    "ATTN_PROJ",
    "INPUT_OF",
    "MLP_PROJ",
    "PROJECTIONS",
    "Block",
    "batch_ids",
    "batch_rows",
    "calibration_batches",
    "find_blocks",
    "iter_batches",
    "run_model",
    "vocab_size",
]

ATTN_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJ = ("gate_proj", "up_proj", "down_proj")
PROJECTIONS = ATTN_PROJ + MLP_PROJ
# projection -> the input it reads (q/k/v share the attention input, gate/up the MLP input)
INPUT_OF = {
    "q_proj": "attn_in",
    "k_proj": "attn_in",
    "v_proj": "attn_in",
    "o_proj": "o_in",
    "gate_proj": "mlp_in",
    "up_proj": "mlp_in",
    "down_proj": "down_in",
}


@dataclass(frozen=True)
class Block:
    """One decoder block: its path, its attention and MLP paths, and the projections' paths."""

    path: str
    attn: str
    mlp: str

    def proj(self, name: str) -> str:
        """Full module path of projection ``name`` (``"q_proj"`` ... ``"down_proj"``)."""
        if name not in PROJECTIONS:
            raise SparseError(f"unknown projection {name!r}; one of {', '.join(PROJECTIONS)}")
        return f"{self.attn if name in ATTN_PROJ else self.mlp}.{name}"

    def projections(self) -> dict[str, str]:
        """``{"q_proj": "model.layers.0.self_attn.q_proj", ...}`` in the order of PROJECTIONS."""
        return {n: self.proj(n) for n in PROJECTIONS}


def _has(module: nn.Module, names: Iterable[str]) -> bool:
    return all(isinstance(getattr(module, n, None), nn.Module) for n in names)


def find_blocks(model: nn.Module) -> list[Block]:
    """The Llama-style blocks of ``model`` in module order; one-line error when there are none.

    A block is a module with one child attention (q/k/v/o_proj) and one child gated MLP
    (gate/up/down_proj and act_fn). Projections may already be wrapped (sparsified).
    """
    if not isinstance(model, nn.Module):
        raise SparseError(f"sparsity needs an nn.Module (a causal LM), got {type(model).__name__}")
    blocks: list[Block] = []
    for path, module in model.named_modules():
        attn = [n for n, c in module.named_children() if _has(c, ATTN_PROJ)]
        mlp = [n for n, c in module.named_children() if _has(c, MLP_PROJ) and hasattr(c, "act_fn")]
        if len(attn) == 1 and len(mlp) == 1:
            prefix = f"{path}." if path else ""
            blocks.append(Block(path, prefix + attn[0], prefix + mlp[0]))
    if not blocks:
        raise SparseError(
            f"{type(model).__name__} has no Llama-style blocks (self_attn.q/k/v/o_proj and "
            "mlp.gate/up/down_proj); actlab.sparse supports Llama-family models (Llama, "
            "Mistral, Qwen2, SmolLM2, Gemma)"
        )
    return blocks


Batch = torch.Tensor | dict[str, Any]


def iter_batches(
    batches: Iterable[Batch] | torch.Tensor, *, min_tokens: int = 1, vocab: int | None = None
) -> list[Batch]:
    """The calibration batches as a list, checked: token ids ``[B, T]``/``[T]`` or dicts.

    Raises a one-line :class:`SparseError` for a non-token or empty batch, ids outside
    ``[0, vocab)`` (when ``vocab`` is given), and when the batches hold fewer than
    ``min_tokens`` tokens in all.
    """
    if isinstance(batches, torch.Tensor):
        batches = [batches]
    if isinstance(batches, (str, bytes)) or not isinstance(batches, Iterable):
        raise SparseError(
            "calibration batches must be token-id tensors [batch, seq] (or dicts of model "
            f"inputs); got {type(batches).__name__} (tokenize the text first)"
        )
    out: list[Batch] = []
    tokens = 0
    for b in batches:
        ids = b.get("input_ids") if isinstance(b, dict) else b
        if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.long, torch.int32):
            raise SparseError(
                "each calibration batch must be a LongTensor of token ids [batch, seq] or a "
                f"dict with 'input_ids'; got {type(ids).__name__}"
                + (f" of {ids.dtype}" if isinstance(ids, torch.Tensor) else "")
            )
        if ids.ndim == 1:
            ids = ids[None]
            b = {**b, "input_ids": ids} if isinstance(b, dict) else ids
        if ids.ndim != 2:
            raise SparseError(f"token ids must be [batch, seq]; got shape {tuple(ids.shape)}")
        if ids.numel() == 0:
            raise SparseError(f"calibration batch {len(out)} is empty (shape {tuple(ids.shape)})")
        if vocab is not None and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise SparseError(
                f"calibration batch {len(out)} has token ids outside [0, {vocab}) (min "
                f"{int(ids.min())}, max {int(ids.max())}); tokenize with the model's tokenizer"
            )
        tokens += ids.numel()
        out.append(b)
    if tokens < max(min_tokens, 1):
        raise SparseError(
            f"calibration text too short: {tokens} tokens, need at least {max(min_tokens, 1)} "
            "(pass more text)"
        )
    return out


def batch_ids(batch: Batch) -> torch.Tensor:
    """The token ids ``[B, T]`` of a checked batch (a tensor, or a dict's ``input_ids``)."""
    ids = batch.get("input_ids") if isinstance(batch, dict) else batch
    assert isinstance(ids, torch.Tensor)
    return ids


def batch_rows(batch: Batch, start: int, stop: int | None) -> Batch:
    """Rows (sequences) ``start:stop`` of a batch; a dict's tensors are cut, other values kept."""
    if isinstance(batch, dict):
        return {k: v[start:stop] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return batch[start:stop]


def vocab_size(model: nn.Module) -> int | None:
    """Rows of the model's input embedding (``get_input_embeddings``), or None."""
    get = getattr(model, "get_input_embeddings", None)
    try:
        emb = get() if callable(get) else None
    except (NotImplementedError, AttributeError):
        return None
    n = getattr(emb, "num_embeddings", None)
    return int(n) if isinstance(n, int) else None


def calibration_batches(
    model: nn.Module, batches: Iterable[Batch] | torch.Tensor, *, min_tokens: int
) -> list[Batch]:
    """:func:`iter_batches` checked against ``model``'s vocabulary."""
    return iter_batches(batches, min_tokens=min_tokens, vocab=vocab_size(model))


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def run_model(model: nn.Module, batch: Batch) -> Any:
    """One forward of a causal LM on a batch (no KV cache), on the model's device."""
    dev = _device(model)
    if isinstance(batch, dict):
        kwargs = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    else:
        kwargs = {"input_ids": batch.to(dev)}
    kwargs.setdefault("use_cache", False)
    return model(**kwargs)
