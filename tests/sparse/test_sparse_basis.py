"""The sparse basis (TEAL ``rotation="sparse"``): hard-threshold orthogonal Procrustes.

Checked against known answers: on data that is exactly sparse in a hidden orthogonal basis
that basis loses no energy and is a fixed point, and from a nearby rotation the refinement
walks back to it; the loss never rises from round to round and ends at or below
the PCA start; the basis is orthogonal; the threshold keeps exactly the largest entries; the
rotated dense model computes the same function and TEAL's realised sparsity meets its target.
"""

from __future__ import annotations

import copy

import pytest
import torch
from sparse_helpers import assert_realised, logits, randomise_norms
from torch import nn

from actlab.sparse import SparseError, make_method, pca_bases, sparse_basis
from actlab.sparse._orthogonal import _hard_threshold, basis_loss


def _hidden_sparse(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q_true, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    # exactly half of every row is zero: the 0.5-threshold keeps the true support
    order = torch.rand(n, d, generator=g).argsort(dim=1)
    z[torch.arange(n)[:, None], order[:, : d // 2]] = 0.0
    return z @ q_true.T, q_true  # x = z Q^T, so x Q_true = z


def test_hard_threshold_keeps_the_largest_entries() -> None:
    z = torch.tensor([[3.0, -0.5, 0.1], [-2.0, 0.2, 1.0]])
    out = _hard_threshold(z, 0.5)
    assert torch.equal(out, torch.tensor([[3.0, 0.0, 0.0], [-2.0, 0.0, 1.0]]))
    assert torch.equal(_hard_threshold(z, 0.0), z)


def test_a_hidden_sparse_basis_is_a_fixed_point_and_attracts() -> None:
    x, q_true = _hidden_sparse(2000, 8, seed=0)
    # the true basis loses nothing and the iteration stays there
    q = sparse_basis([x], q_true, 0.5, rounds=3)
    assert basis_loss([x], q, 0.5, [1.0]) < 1e-12
    assert torch.allclose(q, q_true, atol=1e-10)
    # from a nearby rotation it walks back: 30x less loss, the basis matches up to sign
    g = torch.Generator().manual_seed(1)
    a = 0.05 * torch.randn(8, 8, generator=g, dtype=torch.float64)
    start = q_true @ torch.linalg.matrix_exp(a - a.T)
    before = basis_loss([x], start, 0.5, [1.0])
    q = sparse_basis([x], start, 0.5, rounds=40)
    assert basis_loss([x], q, 0.5, [1.0]) < before / 30
    match = (q.T @ q_true).abs().max(dim=0).values  # [d]: 1 for a signed permutation
    assert float(match.min()) > 0.99


def test_loss_never_rises_and_the_basis_stays_orthogonal() -> None:
    g = torch.Generator().manual_seed(3)
    mix = torch.randn(12, 12, generator=g)
    xs = [torch.randn(500, 12, generator=g) @ mix, torch.randn(300, 12, generator=g).pow(3)]
    w = [3.0, 1.0]
    c = sum(x.double().T @ x.double() for x in xs)
    _, vecs = torch.linalg.eigh(c)
    q = vecs.flip(-1).contiguous()
    losses = [basis_loss(xs, q, 0.4, w)]
    for _ in range(8):
        q = sparse_basis(xs, q, 0.4, rounds=1, weights=w)
        losses.append(basis_loss(xs, q, 0.4, w))
        eye = torch.eye(12, dtype=torch.float64)
        assert torch.allclose(q.T @ q, eye, atol=1e-5)
    assert all(b <= a + 1e-6 for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < losses[0]


def test_sparse_rotation_keeps_the_dense_function_and_meets_the_target(
    llama: nn.Module, batches: list[torch.Tensor]
) -> None:
    randomise_norms(llama)
    dense = copy.deepcopy(llama)
    pca = pca_bases(llama, batches)
    refined = pca_bases(llama, batches, refine=5, sparsity=0.5)
    for path, q in refined.items():
        eye = torch.eye(q.shape[0], dtype=torch.float64)
        assert torch.allclose(q.T @ q, eye, atol=1e-6)
        assert not torch.allclose(q, pca[path])
    state = make_method("teal", sparsity=0.5, rotation="sparse", rotation_rounds=5).calibrate(
        llama, batches
    )
    assert set(state.bases) == set(refined)
    for path, q in state.bases.items():
        assert torch.allclose(q, refined[path], atol=1e-5)
    # the zero-sparsity rotation (thresholds off) is the dense function
    rotated = copy.deepcopy(dense)
    from actlab.sparse import orthogonalize

    orthogonalize(rotated, "pca", bases=refined)
    for a, b in zip(logits(rotated, batches), logits(dense, batches)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4), float((a - b).abs().max())
    assert_realised(dense, state, batches, 0.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rotation": "ica"}, "rotation must be None, 'pca' or 'sparse'"),
        ({"rotation": "sparse", "rotation_rounds": 0}, "rotation_rounds must be >= 1"),
        ({"rotation": "sparse", "rotation_rounds": 2.5}, "rotation_rounds must be an integer"),
    ],
)
def test_bad_rotation_settings_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(SparseError, match=match):
        make_method("teal", sparsity=0.5, **kwargs)


def test_pca_bases_refine_needs_a_sparsity(llama: nn.Module, batches: list[torch.Tensor]) -> None:
    with pytest.raises(SparseError, match="needs a sparsity in"):
        pca_bases(llama, batches, refine=2, sparsity=0.0)
    with pytest.raises(SparseError, match="refine rounds must be an integer"):
        pca_bases(llama, batches, refine=-1)
