"""PackArena: packed decode weights carved from huge-page-advised chunks (actlab.sparse._arena).

Whether the kernel then backs a chunk with 2 MiB pages depends on the system's free memory, so
the tests check what actlab controls: the advice (the ``hg`` flag of the mapping in
``/proc/self/smaps``), the layout (aligned, disjoint, contiguous tensors), the fallbacks, and
that the kernels give bit-identical results on arena memory and on plain tensors.
"""

from __future__ import annotations

import copy
import ctypes
import mmap
from pathlib import Path

import pytest
import torch
from sparse_helpers import tiny_llama
from torch import nn

from actlab.sparse import SparseLinear, kernels_available, make_method, use_kernels
from actlab.sparse._arena import HUGE_PAGE, PackArena, huge_pages_available, huge_pages_wanted

HUGE, WHY = huge_pages_available()
needs_huge = pytest.mark.skipif(not HUGE, reason=f"no transparent huge pages here: {WHY}")


def _advised(ptr: int) -> bool:
    """Whether the mapping holding address ``ptr`` carries the MADV_HUGEPAGE flag (hg)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0] if line else ""
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo <= ptr < hi
        elif inside and line.startswith("VmFlags:"):
            return "hg" in line.split()[1:]
    return False


def test_layout_aligned_disjoint_and_writable() -> None:
    arena = PackArena(chunk_bytes=HUGE_PAGE, huge=True)
    shapes = [((3, 5), torch.float32), ((7,), torch.bfloat16), ((4, 4), torch.float32)]
    ts = [arena.empty(s, d) for s, d in shapes]
    for t, (s, d) in zip(ts, shapes, strict=True):
        assert tuple(t.shape) == s and t.dtype == d and t.is_contiguous()
        if arena.huge:
            assert t.data_ptr() % 64 == 0
    spans = sorted((t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()) for t in ts)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    for i, t in enumerate(ts):
        t.fill_(i + 1)
    assert [float(t.float().mean()) for t in ts] == [1.0, 2.0, 3.0]
    assert arena.empty((0, 3), torch.float32).numel() == 0


@needs_huge
def test_chunks_are_advised_and_roll_over() -> None:
    arena = PackArena(chunk_bytes=HUGE_PAGE, huge=True)
    a = arena.empty((HUGE_PAGE // 8,), torch.float32)  # half a chunk
    b = arena.empty((HUGE_PAGE // 8,), torch.float32)  # the other half
    c = arena.empty((HUGE_PAGE // 8,), torch.float32)  # a new chunk
    big = arena.empty((3 * HUGE_PAGE // 4,), torch.float32)  # larger than a chunk: its own
    assert arena.huge and arena.advised_bytes == 2 * HUGE_PAGE + 3 * HUGE_PAGE
    assert b.data_ptr() == a.data_ptr() + HUGE_PAGE // 2
    assert c.data_ptr() % HUGE_PAGE == 0 and big.data_ptr() % HUGE_PAGE == 0
    for t in (a, c, big):
        assert _advised(t.data_ptr())
    # a fresh anonymous mapping is not advised (the control; not torch.empty, which may reuse
    # heap pages that an earlier, freed arena chunk advised: glibc keeps such ranges mapped)
    plain = mmap.mmap(-1, 2 * HUGE_PAGE)
    try:
        view = ctypes.c_char.from_buffer(plain)
        assert not _advised(ctypes.addressof(view))
        del view
    finally:
        plain.close()


@pytest.mark.parametrize("env", [None, "0", "off", " No "])
def test_off_unless_asked(monkeypatch: pytest.MonkeyPatch, env: str | None) -> None:
    if env is None:
        monkeypatch.delenv("ACTLAB_HUGE_PAGES", raising=False)
    else:
        monkeypatch.setenv("ACTLAB_HUGE_PAGES", env)
    assert not huge_pages_wanted()
    arena = PackArena()
    assert not arena.huge and arena.reason == ""
    t = arena.empty((4, 3), torch.float32)
    assert t.untyped_storage().nbytes() == 48 and arena.advised_bytes == 0
    monkeypatch.setenv("ACTLAB_HUGE_PAGES", "1")
    assert huge_pages_wanted() and PackArena().huge == HUGE
    assert not PackArena(huge=False).huge


@pytest.mark.parametrize("env", ["1", "yes", " TRUE ", "on"])
def test_on_spellings(monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    monkeypatch.setenv("ACTLAB_HUGE_PAGES", env)
    assert huge_pages_wanted() and PackArena().huge == HUGE


@pytest.mark.parametrize("env", ["maybe", "2", "-1"])
def test_unknown_switch_is_one_line(monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    monkeypatch.setenv("ACTLAB_HUGE_PAGES", env)
    with pytest.raises(ValueError, match=f"ACTLAB_HUGE_PAGES={env!r}: expected 1") as e:
        PackArena()
    assert "\n" not in str(e.value)
    if kernels_available():  # use_kernels says it before packing anything
        model = nn.Sequential(SparseLinear.wrap(nn.Linear(8, 8), 0.5))
        with pytest.raises(ValueError, match="ACTLAB_HUGE_PAGES"):
            use_kernels(model)
        assert model[0]._kernel is None


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "64"])
def test_bad_chunk_bytes(bad: object) -> None:
    with pytest.raises(ValueError, match="chunk_bytes must be a positive int"):
        PackArena(chunk_bytes=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="huge must be True, False or None"):
        PackArena(huge="yes")  # type: ignore[arg-type]


kernels = pytest.mark.skipif(not kernels_available(), reason="sparse kernels not built here")


@kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernels_bit_identical_on_arena_and_plain_memory(
    monkeypatch: pytest.MonkeyPatch,
    batches,
    dtype: torch.dtype,  # noqa: ANN001
) -> None:
    model = tiny_llama(2, seed=5)
    m = make_method("cats", sparsity=0.5)  # gated MLP kernels and plain linears
    m.apply(model, m.calibrate(model, batches))
    plain = copy.deepcopy(model)
    monkeypatch.setenv("ACTLAB_HUGE_PAGES", "1")
    rep = use_kernels(model, dtype, head=True)
    monkeypatch.delenv("ACTLAB_HUGE_PAGES")
    rep0 = use_kernels(plain, dtype, head=True)
    assert rep0.pages == "" and "pages" not in str(rep0)
    assert ("transparent huge pages" in str(rep)) == HUGE
    x = batches[0][:1, :6]
    with torch.no_grad():
        for t in range(1, x.shape[1] + 1):  # one position at a time: the kernel path
            a = model(x[:, :t]).logits[:, -1]
            b = plain(x[:, :t]).logits[:, -1]
            assert torch.equal(a, b)


@kernels
@pytest.mark.parametrize("env", ["0", "1"])
def test_repack_reuses_memory_and_follows_the_weights(
    monkeypatch: pytest.MonkeyPatch, env: str
) -> None:
    monkeypatch.setenv("ACTLAB_HUGE_PAGES", env)
    torch.manual_seed(0)
    fast = SparseLinear.wrap(nn.Linear(48, 40), 0.5)
    ref = copy.deepcopy(fast)
    use_kernels(nn.Sequential(fast))
    k = fast._kernel
    ptr = k.packed.wt.data_ptr()  # type: ignore[union-attr]
    x = torch.randn(1, 48)
    with torch.no_grad():
        for w in (fast, ref):
            w.weight.mul_(-1.5)
        assert torch.allclose(fast(x), ref(x), rtol=1e-5, atol=1e-5)
        fast.weight = nn.Parameter(torch.randn(40, 48))  # replaced: same shape, same memory
        ref.weight = nn.Parameter(fast.weight.detach().clone())
        assert torch.allclose(fast(x), ref(x), rtol=1e-5, atol=1e-5)
    assert k.packed.wt.data_ptr() == ptr  # type: ignore[union-attr]


@kernels
def test_packed_in_inference_mode_repacks_outside_it() -> None:
    torch.manual_seed(1)
    fast = SparseLinear.wrap(nn.Linear(32, 24), 0.5)
    ref = copy.deepcopy(fast)
    with torch.inference_mode():
        use_kernels(nn.Sequential(fast))
    with torch.no_grad():
        for w in (fast, ref):
            w.weight.add_(0.25)
        x = torch.randn(1, 32)
        assert torch.allclose(fast(x), ref(x), rtol=1e-5, atol=1e-5)
