"""Finding the modules a probe attaches to: activations, blocks, attention, routers, globs.

- activation: every module :func:`actlab.surgery.identify_activation` recognises (actlab,
  ``torch.nn``, transformers and timm activation classes);
- block: the elements of the longest ``nn.ModuleList`` whose elements share one class and
  hold parameters (``model.layers.*`` in Llama, ``encoder.layer.*`` in BERT, ``blocks.*`` in
  our ViT), i.e. the post-residual outputs of the transformer blocks;
- attention: the innermost modules whose class name ends in "Attention" (transformers'
  ``BertSelfAttention``, ``LlamaAttention``; our ViT's ``Attention``) and ``nn.Softmax`` /
  ``nn.MultiheadAttention`` modules;
- router: modules named ``*router`` or ``*.gate`` (Mixtral, Qwen-MoE, OLMoE routers);
- a glob or list of globs (fnmatch over qualified names) picks named modules directly.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from actlab.probes.base import match_any

__all__ = [
    "find_sites",
    "activation_sites",
    "block_sites",
    "attention_sites",
    "router_sites",
    "glob_sites",
    "ROUTER_GLOBS",
]

Sites = list[tuple[str, nn.Module]]
ROUTER_GLOBS = ("*router", "*.gate", "gate")


def _identify(module: nn.Module) -> str | None:
    from actlab.surgery import identify_activation

    return identify_activation(module)


def activation_sites(model: nn.Module) -> Sites:
    """Every activation module, in registration order."""
    return [(n, m) for n, m in model.named_modules() if n and _identify(m) is not None]


def block_sites(model: nn.Module) -> Sites:
    """The transformer blocks: elements of the longest homogeneous, parameterised ModuleList."""
    best: Sites = []
    for name, m in model.named_modules():
        if not isinstance(m, nn.ModuleList) or len(m) < 1:
            continue
        kids = list(m)
        if len({type(k) for k in kids}) != 1:
            continue
        if not any(True for _ in kids[0].parameters()):
            continue
        if len(kids) > len(best):
            prefix = f"{name}." if name else ""
            best = [(f"{prefix}{i}", k) for i, k in enumerate(kids)]
    return best


def _is_attention(m: nn.Module) -> bool:
    if isinstance(m, (nn.Softmax, nn.MultiheadAttention)):
        return True
    return type(m).__name__.endswith("Attention")


def attention_sites(model: nn.Module) -> Sites:
    """Innermost attention modules (a match with a matching descendant is skipped)."""
    found = [(n, m) for n, m in model.named_modules() if n and _is_attention(m)]
    names = [n for n, _ in found]
    out: Sites = []
    for n, m in found:
        if any(o != n and o.startswith(n + ".") for o in names):
            continue
        out.append((n, m))
    return out


def router_sites(model: nn.Module) -> Sites:
    return glob_sites(model, ROUTER_GLOBS)


def glob_sites(model: nn.Module, globs: Iterable[str]) -> Sites:
    g = tuple(globs)
    return [(n, m) for n, m in model.named_modules() if n and match_any(n, g)]


_FINDERS = {
    "activation": activation_sites,
    "block": block_sites,
    "attention": attention_sites,
    "router": router_sites,
}


def find_sites(model: nn.Module, target: str) -> Sites:
    """The default sites of a probe target ("activation", "block", "attention", "router")."""
    try:
        finder = _FINDERS[target]
    except KeyError:
        raise ValueError(
            f"unknown probe target {target!r}; expected one of {sorted(_FINDERS)}"
        ) from None
    return finder(model)
