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

Two choices of ``Q_l`` (``basis=``):

- ``"k_proj"`` / ``"gate_proj"`` (WINA): ``Q_l = V`` from the SVD of the reference projection,
  as above;
- ``"pca"`` (a layer-wise rotation in the spirit of LaRoSA, arXiv 2507.01299): ``Q_l`` = the
  eigenvectors of ``E[x x^T]``, ``x = h / rms(h)`` the weightless-normalised inputs of block
  l's two norms on calibration text (:func:`pca_bases`). In that basis the energy of the
  inputs of q/k/v/gate/up is concentrated in few coordinates, so zeroing the smallest
  entries loses far less (on SmolLM2 the relative MLP output error at 50% input sparsity drops
  from ~0.08 to ~0.02). The change of basis between blocks costs one ``d x d`` matrix-vector
  product per block per token, which sparsity reports must count as dense work.

The dense model computes the same function (to float rounding). One basis per block, so only
the reference projection of each block is column-orthogonal (the paper rotates attention and
MLP separately, which needs a second change of basis inside the block). Supported: pre-norm
Llama-style blocks with ``input_layernorm`` / ``post_attention_layernorm`` RMSNorms whose
output is ``weight * x / rms(x)`` (Llama, Mistral, Qwen2, SmolLM2); not Gemma (``1 + weight``
and sandwich norms).

The rotated weights are saved by ``save_pretrained`` and the config records the rotation
(``actlab_rotation``), but the between-block hooks are not modules: a reloaded model gets them
back from the bases with :func:`restore_rotation` (``actlab.sparse.apply_state`` does this for a
state that carries bases), and running a reloaded rotated model without them is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from actlab.sparse._modules import SparseLinear
from actlab.sparse._sites import Batch, Block, find_blocks, iter_batches, run_model, vocab_size
from actlab.sparse._state import SparseError

__all__ = [
    "BASES",
    "Orthogonalized",
    "orthogonalize",
    "basis_loss",
    "pca_bases",
    "restore_rotation",
    "rotation_missing",
    "sparse_basis",
]

REFERENCES = ("k_proj", "gate_proj")
BASES = (*REFERENCES, "pca")
CONFIG_KEY = "actlab_rotation"  # in the model config: {"basis": ..., "blocks": n}
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


def _config_rotation(model: nn.Module) -> Any:
    return getattr(getattr(model, "config", None), CONFIG_KEY, None)


def _rotate_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    r = module.wina_rotation
    if args:
        h = args[0]
        return (h @ r.to(h.dtype), *args[1:]), kwargs
    h = kwargs["hidden_states"]
    return args, {**kwargs, "hidden_states": h @ r.to(h.dtype)}


@torch.no_grad()
def pca_bases(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    group: int = 1,
    refine: int = 0,
    sparsity: float = 0.5,
) -> dict[str, torch.Tensor]:
    """Per block, the eigenvectors (columns, largest eigenvalue first) of ``E[x x^T]`` over the
    weightless-normalised inputs ``x = h / rms(h)`` of its two RMSNorms on ``batches``.

    ``group=k`` pools k consecutive blocks into one basis (the same tensor for each of them),
    so the residual changes basis only every k blocks: 1/k of the dense overhead, at some
    cost in how well the basis fits each block. ``group=0`` is one basis for the whole model
    (no change of basis at all). float64 ``[d, d]`` orthogonal matrices keyed by block path
    (one dense forward, no KV cache).

    ``refine=n`` starts from that PCA basis and runs n rounds of :func:`sparse_basis` at
    ``sparsity``: the basis then minimises the energy lost by zeroing the smallest ``sparsity``
    fraction of each input, not the energy outside a fixed subspace (the inputs are kept in
    float32 for it: 2 x blocks x tokens x d floats).
    """
    if isinstance(group, bool) or not isinstance(group, int) or group < 0:
        raise SparseError(f"rotation group must be an integer >= 0 (0: one basis); got {group!r}")
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise SparseError(f"rotation refine rounds must be an integer >= 0; got {refine!r}")
    if refine and not 0 < sparsity < 1:
        raise SparseError(f"refining a basis needs a sparsity in (0, 1); got {sparsity!r}")
    kept: dict[str, list[torch.Tensor]] = {}
    blocks = find_blocks(model)
    norms = [_block_norms(model, b) for b in blocks]
    data = iter_batches(batches, vocab=vocab_size(model))
    cov: dict[str, torch.Tensor] = {}
    handles = []
    for b, pair in zip(blocks, norms):
        for site, norm in enumerate(pair):
            eps = float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)) or 1e-6)

            def pre(
                _m: nn.Module,
                a: tuple[Any, ...],
                path: str = b.path,
                eps: float = eps,
                site: int = site,
            ) -> None:
                h = a[0].detach().double()
                x = h / (h.pow(2).mean(-1, keepdim=True) + eps).sqrt()
                x = x.reshape(-1, x.shape[-1])  # [tokens, d]
                c = (x.T @ x).cpu()
                cov[path] = cov[path] + c if path in cov else c
                if refine:
                    kept.setdefault(f"{path}#{site}", []).append(x.float().cpu())

            handles.append(norm.register_forward_pre_hook(pre))
    was = model.training
    model.eval()
    try:
        for batch in data:
            run_model(model, batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    missing = [b.path for b in blocks if b.path not in cov]
    if missing:
        raise SparseError(f"block {missing[0]} never ran on the calibration batches")
    size = group or len(blocks)
    bases: dict[str, torch.Tensor] = {}
    for start in range(0, len(blocks), size):
        members = blocks[start : start + size]
        c = sum((cov[b.path] for b in members), torch.zeros_like(cov[members[0].path]))
        _, vecs = torch.linalg.eigh(c)
        q = vecs.flip(-1).contiguous()  # largest eigenvalue first
        if refine:
            sites = [f"{b.path}#{k}" for b in members for k in (0, 1)]
            xs = [torch.cat(kept.pop(k)) for k in sites]
            rows = [_reader_rows(model, b, k) for b in members for k in (0, 1)]
            q = sparse_basis(xs, q, sparsity, rounds=refine, weights=rows)
        for b in members:
            bases[b.path] = q
    return bases


def _reader_rows(model: nn.Module, block: Block, site: int) -> float:
    """Summed out_features of the projections reading norm ``site`` of ``block`` (0: q|k|v,
    1: gate|up): the weight of that input in :func:`sparse_basis`."""
    readers = ("q_proj", "k_proj", "v_proj") if site == 0 else ("gate_proj", "up_proj")
    return float(sum(_linear(model, block.proj(r)).out_features for r in readers))


def _hard_threshold(z: torch.Tensor, sparsity: float) -> torch.Tensor:
    """``z`` with its ``sparsity`` fraction of smallest-magnitude entries set to 0 (one
    threshold for the whole tensor, as TEAL's per-input threshold)."""
    k = int(sparsity * z.numel())
    if k <= 0:
        return z
    t = z.abs().flatten().kthvalue(k).values
    return z * (z.abs() > t)


def basis_loss(
    xs: list[torch.Tensor], q: torch.Tensor, sparsity: float, weights: list[float]
) -> float:
    """``sum_k w_k ||X_k - H(X_k Q) Q^T||^2 / sum_k w_k ||X_k||^2``: the weighted fraction of
    input energy lost when each input ``X_k`` [tokens, d] is thresholded in basis ``Q``."""
    q = q.to(xs[0].dtype)
    lost = sum(
        w * float((x @ q - _hard_threshold(x @ q, sparsity)).pow(2).sum())
        for x, w in zip(xs, weights)
    )
    total = sum(w * float(x.pow(2).sum()) for x, w in zip(xs, weights))
    return lost / max(total, torch.finfo(torch.float64).tiny)


@torch.no_grad()
def sparse_basis(
    xs: list[torch.Tensor],
    start: torch.Tensor,
    sparsity: float,
    *,
    rounds: int = 20,
    weights: list[float] | None = None,
) -> torch.Tensor:
    """An orthogonal basis in which hard-thresholding the inputs loses little energy.

    Minimises ``sum_k w_k ||X_k Q - Z_k||^2`` over orthogonal ``Q`` and codes ``Z_k`` with a
    ``1 - sparsity`` fraction of nonzeros each, by alternating the two exact partial minimisers
    (orthogonal dictionary learning with hard thresholding):

    - codes: ``Z_k = H(X_k Q)``, the largest-magnitude entries of ``X_k Q`` kept;
    - basis: ``Q = U V^T`` from the SVD ``sum_k w_k X_k^T Z_k = U S V^T`` (orthogonal
      Procrustes: ``||X Q - Z||^2 = ||X||^2 + ||Z||^2 - 2 tr(Q^T X^T Z)``).

    Neither step can raise the loss, so it is non-increasing from ``start`` (the PCA basis in
    :func:`pca_bases`). ``xs``: inputs [tokens, d] (float32 is enough); returns float64 [d, d].
    """
    w = weights if weights is not None else [1.0] * len(xs)
    q = start.to(xs[0].dtype)
    for _ in range(rounds):
        m = torch.zeros_like(q)
        for x, wk in zip(xs, w):
            m += wk * (x.T @ _hard_threshold(x @ q, sparsity))  # [d, d]
        u, _, vh = torch.linalg.svd(m.double())
        q = (u @ vh).to(xs[0].dtype)
    return q.double().contiguous()


def _check_bases(
    blocks: list[Block], bases: Mapping[str, torch.Tensor], d: int
) -> dict[str, torch.Tensor]:
    out = {}
    for b in blocks:
        q = bases.get(b.path)
        if not isinstance(q, torch.Tensor) or tuple(q.shape) != (d, d):
            raise SparseError(
                f"rotation basis for {b.path} missing or not [{d}, {d}]; the bases were computed "
                "on another model"
            )
        q = q.detach().double().cpu()
        if not torch.allclose(q.T @ q, torch.eye(d, dtype=torch.float64), atol=1e-4):
            raise SparseError(f"rotation basis for {b.path} is not orthogonal")
        out[b.path] = q
    return out


def _install_hook(layer: nn.Module, rotation: torch.Tensor) -> None:
    layer.register_buffer("wina_rotation", rotation.float(), persistent=False)
    layer.register_forward_pre_hook(_rotate_hook, with_kwargs=True)


@torch.no_grad()
def restore_rotation(model: nn.Module, bases: Mapping[str, torch.Tensor]) -> None:
    """Give a reloaded rotated model (config ``actlab_rotation``) its between-block rotations
    back; a one-line error when the model was not saved rotated or already has them."""
    info = _config_rotation(model)
    if not isinstance(info, dict):
        raise SparseError(
            "restore_rotation needs a model saved after orthogonalize (config actlab_rotation)"
        )
    if getattr(model, "actlab_wina_orthogonal", False):
        raise SparseError("the model's rotations are already in place")
    blocks = find_blocks(model)
    d = _weight(_block_norms(model, blocks[0])[0]).numel()
    q = _check_bases(blocks, bases, d)
    previous: torch.Tensor | None = None
    for b in blocks:
        layer = model.get_submodule(b.path)
        if previous is not None and not torch.equal(previous, q[b.path]):
            _install_hook(layer, previous.T @ q[b.path])
        previous = q[b.path]
    setattr(model, "actlab_wina_orthogonal", True)  # noqa: B010 - a marker, not an attribute


def rotation_missing(model: nn.Module) -> bool:
    """True for a model saved rotated (config ``actlab_rotation``) whose between-block
    rotations are not in place: it computes a wrong function until :func:`restore_rotation`."""
    return isinstance(_config_rotation(model), dict) and not getattr(
        model, "actlab_wina_orthogonal", False
    )


@torch.no_grad()
def orthogonalize(
    model: nn.Module,
    reference: str = "k_proj",
    *,
    bases: Mapping[str, torch.Tensor] | None = None,
) -> Orthogonalized:
    """Rotate ``model`` in place, keeping the dense function (see the module docstring).

    ``reference`` (``"k_proj"``, ``"gate_proj"``) makes that projection of each block
    column-orthogonal (WINA); ``reference="pca"`` needs ``bases`` (:func:`pca_bases`); any
    ``bases`` given (block path -> orthogonal ``[d, d]``) are used as they are.
    """
    if reference not in BASES:
        raise SparseError(
            f"orthogonalisation reference (basis) must be one of {', '.join(BASES)}; "
            f"got {reference!r}"
        )
    if reference == "pca" and bases is None:
        raise SparseError("the pca basis needs bases=pca_bases(model, batches)")
    if isinstance(_config_rotation(model), dict) and not getattr(
        model, "actlab_wina_orthogonal", False
    ):
        raise SparseError(
            "the model was saved rotated; give it its rotations back with restore_rotation "
            "instead of rotating it again"
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
    d = emb.weight.shape[1]
    given = _check_bases(blocks, bases, d) if bases is not None else None
    used: dict[str, torch.Tensor] = {}
    previous: torch.Tensor | None = None
    for b, (n_in, n_post) in zip(blocks, norms):
        lin = {n: _linear(model, p) for n, p in b.projections().items()}
        g_in = _weight(n_in).detach().double()
        g_post = _weight(n_post).detach().double()
        if given is not None:
            q = given[b.path]
        else:
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
        elif not torch.equal(previous, q):  # same basis as the block before: nothing to do
            _install_hook(layer, previous.T @ q)
        used[b.path] = q
        previous = q
    assert previous is not None
    _set(head, (head.weight.detach().double() * _weight(final).detach().double()) @ previous)
    _weight(final).fill_(1.0)
    setattr(model, "actlab_wina_orthogonal", True)  # noqa: B010 - a marker, not an attribute
    config = getattr(model, "config", None)
    if config is not None:
        setattr(config, CONFIG_KEY, {"basis": reference, "blocks": len(blocks)})
    return Orthogonalized(reference, used)
