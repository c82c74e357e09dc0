"""TEAL with ``rotation="pca"``: PCA bases are the eigenvectors of the normalised block
inputs' second moment (checked against numpy-free float64 brute force), the rotated dense model
computes the same function, the state carries the bases through save/load and a saved folder,
a reloaded rotated model refuses to run silently wrong, and the rotation lowers the error of
a sparsified MLP input on correlated inputs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from sparse_helpers import assert_realised, logits, randomise_norms
from torch import nn

from actlab.sparse import (
    SparseError,
    apply_state,
    find_blocks,
    load_state,
    make_method,
    orthogonalize,
    pca_bases,
    restore_rotation,
)


def test_pca_bases_match_brute_force(llama: nn.Module, batches: list[torch.Tensor]) -> None:
    captured: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for b in find_blocks(llama):
        layer = llama.get_submodule(b.path)
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            hooks.append(
                norm.register_forward_pre_hook(
                    lambda m, a, p=b.path: captured.setdefault(p, []).append(a[0].detach())
                )
            )
    for x in batches:
        with torch.no_grad():
            llama(input_ids=x, use_cache=False)
    for h in hooks:
        h.remove()
    bases = pca_bases(llama, batches)
    eps = llama.config.rms_norm_eps
    for path, hs in captured.items():
        x = torch.cat([h.double().reshape(-1, h.shape[-1]) for h in hs])
        x = x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
        c = x.T @ x
        q = bases[path]
        # q diagonalises c, eigenvalues in decreasing order
        d = q.T @ c @ q
        off = d - torch.diag(torch.diag(d))
        assert float(off.abs().max()) <= 1e-8 * float(c.abs().max())
        ev = torch.diag(d)
        assert bool((ev[:-1] >= ev[1:] - 1e-9).all())
        assert torch.allclose(ev, torch.linalg.eigvalsh(c).flip(0), rtol=1e-8, atol=1e-8)


def test_pca_rotation_keeps_the_dense_function(
    llama: nn.Module, batches: list[torch.Tensor]
) -> None:
    randomise_norms(llama)
    dense = copy.deepcopy(llama)
    orthogonalize(llama, "pca", bases=pca_bases(llama, batches))
    for a, b in zip(logits(llama, batches), logits(dense, batches)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4), float((a - b).abs().max())
    assert llama.config.actlab_rotation == {"basis": "pca", "blocks": 2}


def test_rotated_teal_state_round_trip_and_function(
    llama: nn.Module, batches: list[torch.Tensor], tmp_path: Path
) -> None:
    randomise_norms(llama)
    dense = copy.deepcopy(llama)
    method = make_method("teal", sparsity=0.5, rotation="pca")
    state = method.calibrate(llama, batches)
    # calibration leaves the caller's model as it was
    for a, b in zip(logits(llama, batches), logits(dense, batches)):
        assert torch.equal(a, b)
    assert set(state.bases) == {b.path for b in find_blocks(llama)}
    state.save(tmp_path / "s.safetensors")
    loaded = load_state(tmp_path / "s.safetensors")
    assert loaded == state
    a_model, b_model = copy.deepcopy(dense), copy.deepcopy(dense)
    method.apply(a_model, state)
    apply_state(b_model, loaded)
    for a, b in zip(logits(a_model, batches), logits(b_model, batches)):
        assert torch.equal(a, b)
    # realised sparsity on the calibration text equals the target (sequential calibration)
    assert_realised(dense, state, batches, 0.5)
    # sparsity 0 never rotates: bit-identical
    zero = make_method("teal", sparsity=0.0, rotation="pca").calibrate(llama, batches)
    assert not zero.bases


def test_saved_rotated_model_restores_or_refuses(
    llama: nn.Module, batches: list[torch.Tensor], tmp_path: Path
) -> None:
    import transformers

    randomise_norms(llama)
    state = make_method("teal", sparsity=0.4, rotation="pca").calibrate(llama, batches)
    sparse = copy.deepcopy(llama)
    apply_state(sparse, state)
    expected = logits(sparse, batches)
    sparse.save_pretrained(tmp_path)
    plain = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert plain.config.actlab_rotation["basis"] == "pca"
    # rotating it again or using a state without bases is refused in one line
    with pytest.raises(SparseError, match="saved rotated"):
        orthogonalize(plain, "pca", bases=state.bases)
    bare = copy.deepcopy(state)
    bare.bases = {}
    with pytest.raises(SparseError, match="no rotation bases"):
        apply_state(copy.deepcopy(plain), bare)
    apply_state(plain, state)  # restores the between-block rotations, then wraps
    for a, b in zip(logits(plain, batches), expected):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(SparseError, match="already"):
        restore_rotation(plain, state.bases)


def test_bad_bases_are_refused(llama: nn.Module, batches: list[torch.Tensor]) -> None:
    bases = pca_bases(llama, batches)
    wrong = {k: 2 * v for k, v in bases.items()}
    with pytest.raises(SparseError, match="not orthogonal"):
        orthogonalize(copy.deepcopy(llama), "pca", bases=wrong)
    with pytest.raises(SparseError, match="missing"):
        orthogonalize(copy.deepcopy(llama), "pca", bases={})
    with pytest.raises(SparseError, match="needs bases"):
        orthogonalize(copy.deepcopy(llama), "pca")
    with pytest.raises(SparseError, match="rotation must be"):
        make_method("teal", sparsity=0.5, rotation="svd")


def test_rotation_lowers_the_error_on_correlated_inputs() -> None:
    """The reason for the rotation: on inputs with correlated coordinates, zeroing the smallest
    half of the coordinates in the principal basis loses less of W x than in the original one."""
    g = torch.Generator().manual_seed(0)
    d, n = 64, 4096
    mix = torch.randn(d, d, generator=g, dtype=torch.float64)
    z = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.logspace(0, -2, d).double()
    x = z @ mix.T  # correlated coordinates
    w = torch.randn(32, d, generator=g, dtype=torch.float64)
    _, q = torch.linalg.eigh(x.T @ x)

    def err(v: torch.Tensor, wv: torch.Tensor) -> float:
        t = v.abs().quantile(0.5)
        y = (v * (v.abs() > t)) @ wv.T
        return float((y - x @ w.T).pow(2).sum() / (x @ w.T).pow(2).sum())

    assert err(x @ q, w @ q) < 0.2 * err(x, w)


def test_rotation_overhead_counts_the_between_block_rotations(
    llama: nn.Module, batches: list[torch.Tensor]
) -> None:
    from actlab.sparse import rotation_overhead

    assert rotation_overhead(llama) == 0.0
    state = make_method("teal", sparsity=0.5, rotation="pca").calibrate(llama, batches)
    apply_state(llama, state)
    blocks = find_blocks(llama)
    d = llama.config.hidden_size
    params = sum(
        llama.get_submodule(p).weight.numel() for b in blocks for p in b.projections().values()
    )
    assert rotation_overhead(llama) == pytest.approx((len(blocks) - 1) * d * d / params)


def test_curves_run_variants_under_their_labels(
    llama: nn.Module, batches: list[torch.Tensor]
) -> None:
    from actlab.sparse import sparsity_curves

    windows = torch.cat(batches)[:, :16]
    rows = sparsity_curves(
        llama,
        batches,
        windows,
        methods=["teal", "teal-pca=teal"],
        sparsities=[0.5],
        params={"teal-pca": {"rotation": "pca"}},
        protocol="all",
        progress=None,
    )
    by = {r["method"]: r for r in rows}
    assert set(by) == {"dense", "teal", "teal-pca"}
    assert by["teal"]["overhead"] == 0.0 and by["teal-pca"]["overhead"] > 0
    assert by["teal-pca"]["effective"] == pytest.approx(
        by["teal-pca"]["realised"] - by["teal-pca"]["overhead"]
    )
    assert by["teal-pca"]["params"]["rotation"] == "pca"
    with pytest.raises(SparseError, match="LABEL=METHOD"):
        sparsity_curves(llama, batches, windows, methods=["=teal"], progress=None)


@pytest.mark.parametrize("group", [0, 2])
def test_grouped_bases_skip_the_change_of_basis(
    llama: nn.Module, batches: list[torch.Tensor], group: int, tmp_path: Path
) -> None:
    from actlab.sparse import rotation_overhead

    randomise_norms(llama)
    dense = copy.deepcopy(llama)
    state = make_method("teal", sparsity=0.5, rotation="pca", rotation_group=group).calibrate(
        llama, batches
    )
    qs = list(state.bases.values())
    assert len(qs) == 2 and torch.equal(qs[0], qs[1])
    state.save(tmp_path / "s.safetensors")  # shared tensors save (copied)
    assert load_state(tmp_path / "s.safetensors") == state
    rotated = copy.deepcopy(dense)
    orthogonalize(rotated, "pca", bases=state.bases)
    assert rotation_overhead(rotated) == 0.0
    for a, b in zip(logits(rotated, batches), logits(dense, batches)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    with pytest.raises(SparseError, match="rotation_group"):
        make_method("teal", sparsity=0.5, rotation="pca", rotation_group=-1)
