"""The KAN ops' small-GEMM loop (``csrc/kan_kernels.cpp``, ``gemm_out``) against ``torch.mm``.

Products of at most ``kSmallGemm`` (32,768) multiply-adds run serially in one of four forms
(vectors along the output's rows or along the sum, on ``c`` or on ``c^T``), chosen by cost
from the operands' strides; larger ones go to ``at::mm_out``. Every layout of a, b and c, with
and without a broadcast addend, in float32 and float64, matches the float64 product.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from actlab.layers import _kan_native as kn

pytestmark = pytest.mark.skipif(
    os.environ.get("ACTLAB_NATIVE", "1") == "0", reason="native kernels disabled by ACTLAB_NATIVE=0"
)


def _ops():  # type: ignore[no-untyped-def]
    ops = kn.ops_for(torch.zeros(1))
    assert ops is not None
    return ops


def _laid(t: torch.Tensor, transposed: bool) -> torch.Tensor:
    """t as it is (row-major) or as the transpose of a row-major (cols, rows) tensor."""
    return t.t().contiguous().t() if transposed else t.contiguous()


@settings(max_examples=120, deadline=None)
@given(
    m=st.integers(1, 130),
    k=st.integers(1, 130),
    n=st.integers(1, 130),
    a_t=st.booleans(),
    b_t=st.booleans(),
    c_t=st.booleans(),
    add=st.sampled_from(["none", "row", "col", "full"]),
    double=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_small_gemm_matches_the_float64_product(m: int, k: int, n: int, a_t: bool, b_t: bool,
                                                c_t: bool, add: str, double: bool,
                                                seed: int) -> None:  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    dtype = torch.float64 if double else torch.float32
    a = _laid(torch.randn(m, k, generator=g, dtype=dtype), a_t)
    b = _laid(torch.randn(k, n, generator=g, dtype=dtype), b_t)
    extra = {"none": None, "row": torch.randn(n, generator=g, dtype=dtype),
             "col": torch.randn(m, 1, generator=g, dtype=dtype),
             "full": torch.randn(m, n, generator=g, dtype=dtype)}[add]  # fmt: skip
    got = _ops().small_gemm(a, b, extra, c_t)
    want = a.double() @ b.double() + (extra.double() if extra is not None else 0.0)
    assert got.shape == (m, n) and got.dtype == dtype
    tol = (1e-12 if double else 2e-6) * (k**0.5 + 1) * float(want.abs().max() + 1)
    assert float((got.double() - want).abs().max()) <= tol


def test_small_gemm_edges_and_the_large_path() -> None:
    """Non-finite values propagate as in torch.mm (NaN and inf in a and in b); one element;
    a product above 32,768 multiply-adds (MKL) gives the same values as torch.mm."""
    ops = _ops()
    a = torch.tensor([[1.0, float("nan")], [2.0, 3.0]])
    b = torch.tensor([[float("inf"), 1.0], [0.5, -1.0]])
    torch.testing.assert_close(ops.small_gemm(a, b, None, False), a @ b, equal_nan=True)
    one = ops.small_gemm(torch.tensor([[3.0]]), torch.tensor([[-2.0]]), torch.tensor([1.0]), True)
    assert one.tolist() == [[-5.0]]
    g = torch.Generator().manual_seed(0)
    big_a, big_b = torch.randn(64, 64, generator=g), torch.randn(64, 64, generator=g)
    torch.testing.assert_close(ops.small_gemm(big_a, big_b, None, False), big_a @ big_b)


def test_small_gemm_is_the_same_at_every_thread_count() -> None:
    ops = _ops()
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(100, 109, generator=g), torch.randn(109, 2, generator=g)
    before = torch.get_num_threads()
    try:
        runs = []
        for t in (1, 2):
            torch.set_num_threads(t)
            runs.append(ops.small_gemm(a, b, None, True))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(runs[0], runs[1])


def test_small_gemm_bad_shapes_are_one_line_errors() -> None:
    ops = _ops()
    for a, b in [(torch.zeros(2, 3), torch.zeros(2, 3)), (torch.zeros(3), torch.zeros(3, 2)),
                 (torch.zeros(2, 3), torch.zeros(3, 2, 1))]:  # fmt: skip
        with pytest.raises(RuntimeError, match=r"small_gemm: expected a \(M, K\) and b") as e:
            ops.small_gemm(a, b, None, False)
        assert "\n" not in str(e.value).split("\nException raised from")[0].strip()
