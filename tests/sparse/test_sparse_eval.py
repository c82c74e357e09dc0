"""actlab.sparse evaluation: the held-out split, protocols, agreement, realised sparsity,
curves, save/reload with a model fingerprint, and the HTML report."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from sparse_eval_helpers import BosTokenizer, char_llama, char_tokenizer
from sparse_helpers import VOCAB, logits

from actlab.data.errors import DatasetNotFoundError
from actlab.sparse import (
    CALIBRATION_BOOKS,
    CALIBRATION_PLAYS,
    HELDOUT_BOOKS,
    HELDOUT_PLAYS,
    EvalResult,
    SparseError,
    apply_saved_state,
    calibration_windows,
    curves_table,
    delta_ci,
    evaluate,
    heldout_windows,
    load_sparse,
    make_method,
    save_sparse,
    sparsity_curves,
)
from actlab.sparse._eval import realised_sparsity
from actlab.sparse._text import document, heldout_documents, text_windows


def _windows(n: int = 4, length: int = 24, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (n, length), generator=g)


def _sparse(model: torch.nn.Module, method: str, s: float, batches: list) -> torch.nn.Module:
    m = copy.deepcopy(model)
    meth = make_method(method, sparsity=s)
    meth.apply(m, meth.calibrate(model, batches))
    return m


# ---------------------------------------------------------------- text split
@pytest.fixture(scope="module")
def texts() -> None:
    try:
        document(heldout_documents()[1])  # KJV
        document(f"play:{CALIBRATION_PLAYS[0]}")
    except (DatasetNotFoundError, SparseError) as e:
        pytest.skip(f"offline text not installed: {e}")


def test_split_is_disjoint_and_deterministic(texts: None) -> None:
    tok = char_tokenizer()
    calib = calibration_windows(tok, tokens=1000, window=64)
    held = heldout_windows(tok, tokens=1024, window=64)
    assert calib.tokens == 1000 and calib.ids.shape == (15, 64) and calib.tail is not None
    assert held.ids.shape == (16, 64) and held.tokens == 1024
    cal_docs, held_docs = set(calib.documents), set(held.documents)
    assert cal_docs == {f"play:{p}" for p in CALIBRATION_PLAYS} and not cal_docs & held_docs
    assert {d for d in held_docs if d.startswith("play:")} == {f"play:{p}" for p in HELDOUT_PLAYS}
    assert sum(d.startswith("kjv:") for d in held_docs) == 6
    calibration_text = "".join(document(d) for d in cal_docs)
    for row, (doc, a, b) in zip(held.ids, held.spans):
        text = tok.decode(row)
        ids = tok(document(doc)[: b + 64], add_special_tokens=False)["input_ids"]
        assert text == tok.decode(ids[a:b])
        assert text not in calibration_text  # held-out text never seen by calibration
    again = heldout_windows(tok, tokens=1024, window=64)
    assert torch.equal(again.ids, held.ids) and again.spans == held.spans
    # windows of one document do not overlap: consecutive chunks
    spans = sorted((d, a, b) for d, a, b in held.spans)
    for (d1, _, b1), (d2, a2, _) in zip(spans, spans[1:]):
        assert d1 != d2 or b1 <= a2


def test_mixed_calibration_interleaves_books_never_held_out(texts: None) -> None:
    assert not set(CALIBRATION_BOOKS) & set(HELDOUT_BOOKS)
    tok = char_tokenizer()
    calib = calibration_windows(tok, tokens=32 * 64, window=64, source="mixed")
    assert calib.tokens == 32 * 64 and calib.ids.shape == (32, 64)
    plays = [f"play:{p}" for p in CALIBRATION_PLAYS]
    books = [f"kjv:{n}:{b}" for n, b in CALIBRATION_BOOKS.items()]
    assert list(calib.documents) == [d for pair in zip(plays, books) for d in pair]
    assert not set(calib.documents) & set(heldout_documents())
    held = heldout_windows(tok, tokens=1024, window=64)
    calibration_text = "".join(document(d) for d in calib.documents)
    for row in held.ids:
        assert tok.decode(row) not in calibration_text
    # the default source is the comedies alone, and a source must be one of the two
    assert calibration_windows(tok, tokens=640, window=64).documents == tuple(plays)
    with pytest.raises(SparseError, match="unknown calibration source 'bible'; one of"):
        calibration_windows(tok, tokens=640, window=64, source="bible")


def test_kjv_books_read_as_prose(texts: None) -> None:
    genesis = document("kjv:1:genesis")
    assert genesis.startswith("In the beginning God created the heaven and the earth. And")
    assert "[" not in genesis and " 2. " not in genesis[:500]
    assert document("kjv:19:psalms").startswith("Blessed is the man")


def test_bos_starts_every_window_and_counts_are_exact() -> None:
    docs = {"a": "abcdefghij" * 20, "b": "klmnopqrst" * 20}
    w = text_windows(BosTokenizer(), docs, tokens=50, window=10, ragged=True)
    assert w.bos and w.tokens == 50 and w.ids.shape == (5, 10)
    assert bool((w.ids[:, 0] == 1).all()) and w.tail is None
    assert [s[0] for s in w.spans] == ["a", "b", "a", "b", "a"]
    w = text_windows(BosTokenizer(), docs, tokens=55, window=10, ragged=True)
    assert w.tokens == 55 and w.tail is not None and w.tail.shape == (1, 5)
    assert int(w.tail[0, 0]) == 1


def _round_robin_oracle(docs: dict[str, str], tokens: int, window: int, ragged: bool) -> list:
    """Plain restatement of the split: windows of window - 1 characters (BosTokenizer: one id
    per character, BOS first) taken round robin, each document's from its start, a document
    skipped once it has no whole window left; the ragged tail goes to the next document in
    turn with enough left. Returns the spans."""
    body = window - 1
    names, used, spans = list(docs), dict.fromkeys(docs, 0), []
    full, rest = divmod(tokens, window)
    i = 0
    for k in range(full + (1 if ragged and rest > 1 else 0)):
        length = body if k < full else rest - 1
        while len(docs[names[i]]) - used[names[i]] < length:
            i = (i + 1) % len(names)
        name = names[i]
        spans.append((name, used[name], used[name] + length))
        used[name] += body
        i = (i + 1) % len(names)
    return spans


@pytest.mark.parametrize("tokens", [10, 45, 99, 100, 187, 260])
@pytest.mark.parametrize("ragged", [False, True])
def test_windows_follow_the_round_robin_and_skip_documents_that_ran_out(
    tokens: int, ragged: bool
) -> None:
    """With enough text every document gets an equal share (the split of earlier versions);
    when one runs out, the others carry on in turn instead of the request failing."""
    docs = {"a": "abcdefghi" * 3, "b": "klmnopqrs" * 12, "c": "tuvwxyz01" * 12}  # 27 / 108 / 108
    w = text_windows(BosTokenizer(), docs, tokens=tokens, window=10, ragged=ragged)
    assert list(w.spans) == _round_robin_oracle(docs, tokens, 10, ragged)
    for row, (name, lo, hi) in zip(w.ids.tolist() + ([w.tail[0].tolist()] if w.tail is not None
                                                      else []), w.spans):  # fmt: skip
        assert row == [1] + [ord(c) % 90 + 4 for c in docs[name][lo:hi]]
    if tokens >= 100:  # more than three rounds: "a" (3 windows) has run out
        assert [s[0] for s in w.spans].count("a") == 3


def test_text_runs_out_only_when_every_document_has() -> None:
    docs = {"a": "abcdefghi" * 3, "b": "klmnopqrs" * 2}  # 3 + 2 windows of 9
    assert text_windows(BosTokenizer(), docs, tokens=50, window=10).ids.shape == (5, 10)
    with pytest.raises(SparseError, match="text too short: the documents hold 5 windows") as e:
        text_windows(BosTokenizer(), docs, tokens=60, window=10)
    assert "\n" not in str(e.value)
    with pytest.raises(SparseError, match="text too short: no document has the last 4 tokens"):
        text_windows(BosTokenizer(), docs, tokens=55, window=10, ragged=True)


def test_too_little_text_is_one_line() -> None:
    with pytest.raises(SparseError, match="text too short") as e:
        text_windows(BosTokenizer(), {"a": "short text"}, tokens=64, window=16)
    assert "\n" not in str(e.value)
    with pytest.raises(SparseError, match="less than one window"):
        text_windows(BosTokenizer(), {"a": "x" * 100}, tokens=8, window=16)
    with pytest.raises(SparseError, match="empty"):
        calibration_windows(BosTokenizer(), tokens=8, window=4, text="  ")


# ---------------------------------------------------------------- protocols
def test_dense_decode_by_token_equals_the_full_forward(llama: torch.nn.Module) -> None:
    win = _windows(5, 24)
    dec = evaluate(llama, win, protocol="decode", batch_size=2)
    assert dec.scored == 5 * (24 - 12 - 1) and dec.prefill == 12
    # an independent reference: log-softmax of one plain full forward, float64
    lp = torch.log_softmax(logits(llama, [win])[0].double(), -1)
    ref = -lp[:, 12:-1].gather(-1, win[:, 13:, None]).mean()
    assert dec.nll == pytest.approx(float(ref), rel=1e-5)
    for protocol in ("all", "last-half"):
        res = evaluate(llama, win, protocol=protocol)
        assert res.nll == pytest.approx(dec.nll, rel=1e-5)
        assert res.realised == 0.0
    other = evaluate(llama, win, protocol="decode", prefill=5)
    assert other.scored == 5 * (24 - 5 - 1)


@pytest.mark.parametrize("method", ["teal", "chess"])
def test_decode_is_sparse_only_after_the_prefill(
    llama: torch.nn.Module, batches: list[torch.Tensor], method: str
) -> None:
    sparse = _sparse(llama, method, 0.5, batches)
    win = _windows(4, 24)
    dec = evaluate(sparse, win, protocol="decode")
    # TEAL's last half of one full forward computes what decoding does when prefill = L/2
    half = evaluate(sparse, win, protocol="last-half")
    assert half.nll == pytest.approx(dec.nll, rel=1e-5)
    assert 0.2 < dec.realised < 0.6
    dense = evaluate(llama, win, protocol="decode")
    assert dec.nll != dense.nll
    every = evaluate(sparse, win, protocol="all")
    assert every.nll != pytest.approx(dec.nll, rel=1e-9)


def test_a_reused_dense_prefill_is_exact(llama: torch.nn.Module, batches: list) -> None:
    win = _windows(5, 24)
    dense = evaluate(llama, win, protocol="decode", batch_size=2, keep_prefill=True)
    assert dense.caches is not None and len(dense.caches) == 3
    sparse = _sparse(llama, "chess", 0.5, batches)
    own = evaluate(sparse, win, protocol="decode", batch_size=2)  # runs its own prefill
    for _ in range(2):  # the kept caches are copied, never consumed
        reused = evaluate(sparse, win, protocol="decode", batch_size=2, reference=dense)
        assert reused.nll == own.nll and torch.equal(reused.argmax, own.argmax)
        assert reused.realised == own.realised


@pytest.mark.parametrize("method", ["teal", "cats", "chess", "wina"])
@pytest.mark.parametrize("protocol", ["decode", "all"])
def test_sparsity_zero_is_identical_and_agrees(
    llama: torch.nn.Module, batches: list[torch.Tensor], method: str, protocol: str
) -> None:
    win = _windows(3, 20)
    dense = evaluate(llama, win, protocol=protocol)
    res = evaluate(_sparse(llama, method, 0.0, batches), win, protocol=protocol, reference=dense)
    assert res.nll == dense.nll and res.agreement == 1.0
    assert torch.equal(res.argmax, dense.argmax)


def test_agreement_counts_equal_argmaxes(llama: torch.nn.Module, batches: list) -> None:
    win = _windows(3, 20)
    dense = evaluate(llama, win, protocol="all")
    sparse = _sparse(llama, "teal", 0.8, batches)
    res = evaluate(sparse, win, protocol="all", reference=dense)
    with torch.no_grad():
        a = sparse(input_ids=win).logits[:, 10:-1].argmax(-1)
        b = llama(input_ids=win).logits[:, 10:-1].argmax(-1)
    assert res.agreement == pytest.approx(float((a == b).double().mean()))
    assert res.agreement < 1.0


def test_realised_sparsity_is_parameter_weighted(llama: torch.nn.Module, batches: list) -> None:
    sparse = _sparse(llama, "cats", 0.5, batches)
    res = evaluate(sparse, _windows(3, 20), protocol="all")
    mlp = sparse.get_submodule("model.layers.0.mlp")
    by = res.by_projection
    assert by["q_proj"] == by["o_proj"] == by["gate_proj"] == 0.0
    assert by["up_proj"] == by["down_proj"] > 0
    attn = sparse.get_submodule("model.layers.0.self_attn")
    block = sum(
        m.weight.numel()
        for m in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj)
        + (mlp.gate_proj, mlp.up_proj, mlp.down_proj)
    )
    expected = by["up_proj"] * (mlp.up_proj.weight.numel() + mlp.down_proj.weight.numel()) / block
    assert res.realised == pytest.approx(expected)
    wina = _sparse(llama, "wina", 0.5, batches)
    total, per = realised_sparsity(wina)
    assert math.isnan(total)  # never ran
    res = evaluate(wina, _windows(3, 20), protocol="decode")
    assert res.realised == pytest.approx(0.5) and set(res.by_projection.values()) == {0.5}


def test_evaluate_refuses_bad_input(llama: torch.nn.Module) -> None:
    win = _windows(2, 10)
    for kwargs, needle in (
        ({"prefill": 9}, "prefill must be in 1..8"),
        ({"prefill": 0}, "prefill"),
        ({"protocol": "first-half"}, "mode must be one of"),
        ({"batch_size": 0}, "batch_size"),
    ):
        with pytest.raises(SparseError, match=needle):
            evaluate(llama, win, **kwargs)
    with pytest.raises(SparseError, match="LongTensor"):
        evaluate(llama, win.float())
    ref = evaluate(llama, win, protocol="all")
    with pytest.raises(SparseError, match="same protocol"):
        evaluate(llama, win, protocol="decode", reference=ref)


def test_curves_rows(llama: torch.nn.Module, batches: list[torch.Tensor]) -> None:
    lines: list[str] = []
    rows = sparsity_curves(
        llama,
        batches,
        _windows(2, 16),
        methods=["teal", "cats"],
        sparsities=[0.5, 0, 0.25],
        params={"teal": {"calibration": "dense"}},
        progress=lines.append,
    )
    assert [(r["method"], r["target"]) for r in rows] == [
        ("dense", 0.0),
        ("teal", 0.25),
        ("teal", 0.5),
        ("cats", 0.25),
        ("cats", 0.5),
    ]
    assert rows[1]["params"]["calibration"] == "dense"
    for r in rows:
        assert r["protocol"] == "decode" and r["calib_tokens"] == 96 and r["eval_tokens"] == 32
        assert r["delta_pct"] == pytest.approx(100 * (r["ppl"] / rows[0]["ppl"] - 1))
        assert 0.0 <= r["agreement"] <= 1.0
    assert any("teal s=0.50" in ln for ln in lines)
    assert any("95% CI" in ln for ln in lines)
    for r in rows[1:]:  # each window scores as many positions: the point is inside its interval
        lo, hi = r["delta_ci"]
        assert lo <= r["delta_pct"] <= hi, r
    assert rows[0]["delta_ci"] == [0.0, 0.0]
    assert "| 95% CI |" in curves_table(rows)
    assert not any(type(m).__name__.startswith("Sparse") for m in llama.modules())
    with pytest.raises(SparseError, match="sparsity method"):
        sparsity_curves(llama, batches, _windows(2, 16), methods=["teel"], progress=None)


# ---------------------------------------------------------------- save / reload
def test_save_and_load_sparse_round_trip(tmp_path, batches: list[torch.Tensor]) -> None:
    model = char_llama()
    tok = char_tokenizer()
    g = torch.Generator().manual_seed(0)
    calib = [torch.randint(4, 100, (2, 48), generator=g)]
    method = make_method("chess", sparsity=0.5)
    state = method.calibrate(model, calib)
    sparse = copy.deepcopy(model)
    method.apply(sparse, state).set_mode("decode")
    save_sparse(tmp_path / "out", sparse, tok, state, name="char-llama", mode="decode")
    loaded = load_sparse(tmp_path / "out")
    assert loaded.state == state and loaded.info["method"] == "chess"
    assert loaded.info["model"]["name"] == "char-llama"
    ids = torch.randint(4, 100, (2, 30), generator=g)
    for mode in ("all", "decode"):
        loaded.report.set_mode(mode)
        for m in sparse.modules():
            if hasattr(m, "mode"):
                m.mode = mode
        assert torch.equal(logits(loaded.model, [ids])[0], logits(sparse, [ids])[0])
    loaded.report.set_mode("decode")
    prompt = tok("To be, or not", return_tensors="pt")
    a = loaded.model.generate(**prompt, max_new_tokens=6, do_sample=False)
    b = sparse.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert a.shape == (1, prompt["input_ids"].shape[1] + 6) and torch.equal(a, b)
    assert "actlab_sparsity" not in loaded.model.config.to_dict()


def test_a_state_refuses_another_model(tmp_path) -> None:
    model = char_llama()
    g = torch.Generator().manual_seed(0)
    calib = [torch.randint(4, 100, (2, 48), generator=g)]
    state = make_method("teal", sparsity=0.4).calibrate(model, calib)
    save_sparse(tmp_path / "out", model, char_tokenizer(), state, name="char-llama")
    apply_saved_state(char_llama(), tmp_path / "out")  # the same model: accepted
    half = char_llama().to(torch.bfloat16)  # the same weights in bf16: accepted
    apply_saved_state(half, tmp_path / "out")
    for other, needle in (
        (char_llama(layers=3), "this model is different"),
        (char_llama(hidden=32), "this model is different"),
        (char_llama(seed=1), "other weights"),
    ):
        with pytest.raises(SparseError, match=needle) as e:
            apply_saved_state(other, tmp_path / "out")
        assert "char-llama" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SparseError, match="not a sparsified model"):
        char_llama().save_pretrained(tmp_path / "plain")
        load_sparse(tmp_path / "plain")


# ---------------------------------------------------------------- report
def test_report_page_is_written_and_escaped(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from actlab.report import write_sparsify_report

    rows = [
        {"method": "dense", "target": 0.0, "realised": 0.0, "ppl": 10.0, "delta_pct": 0.0,
         "agreement": 1.0, "params": {}, "model": "m<1>"},
        {"method": "<script>x</script>", "target": 0.5, "realised": 0.45, "ppl": 12.0,
         "delta_pct": 20.0, "delta_ci": [15.0, 25.0], "agreement": 0.8, "params": {"a": "<b>"},
         "model": "m<1>"},
    ]  # fmt: skip
    path = write_sparsify_report(
        tmp_path / "r.html", rows, title="t <&>", facts=[("protocol", "decode <x>")]
    )
    page = path.read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;" in page
    assert "t &lt;&amp;&gt;" in page and "decode &lt;x&gt;" in page
    assert "data:image/png;base64," in page and "LM head stay dense" in page
    assert "+15.0 .. +25.0" in page and "95% CI of Δ" in page


def _result(window_nll: list[float]) -> EvalResult:
    w = torch.tensor(window_nll, dtype=torch.float64)
    mean = float(w.mean())
    return EvalResult("decode", math.exp(mean), mean, len(window_nll), 16, 8, 7 * len(window_nll),
                      0.0, window_nll=w)  # fmt: skip


def test_delta_ci_is_the_paired_t_interval_over_windows() -> None:
    """Oracle: scipy's t interval of the per-window differences, mapped through exp - 1."""
    from scipy import stats

    dense = _result([2.0, 2.5, 3.0, 2.2, 2.8])
    diffs = [0.10, 0.25, 0.05, 0.30, 0.20]
    sparse = _result([a + d for a, d in zip([2.0, 2.5, 3.0, 2.2, 2.8], diffs)])
    lo, hi = delta_ci(sparse, dense)
    m, se = sum(diffs) / 5, stats.sem(diffs)
    want = stats.t.interval(0.95, 4, loc=m, scale=se)
    assert lo == pytest.approx(100 * math.expm1(want[0]), rel=1e-9)
    assert hi == pytest.approx(100 * math.expm1(want[1]), rel=1e-9)
    lo90, hi90 = delta_ci(sparse, dense, confidence=0.9)
    assert lo < lo90 < 100 * math.expm1(m) < hi90 < hi
    # identical results: a zero-width interval at 0
    assert delta_ci(dense, dense) == (0.0, 0.0)


def test_delta_ci_refuses_mismatched_results_and_is_nan_for_one_window() -> None:
    assert all(math.isnan(v) for v in delta_ci(_result([2.0]), _result([1.0])))
    with pytest.raises(SparseError, match="same windows"):
        delta_ci(_result([2.0, 1.0]), _result([1.0, 2.0, 3.0]))
    with pytest.raises(SparseError, match="confidence"):
        delta_ci(_result([2.0, 1.0]), _result([1.0, 2.0]), confidence=1.5)


def test_evaluate_keeps_the_per_window_nll(llama: torch.nn.Module) -> None:
    res = evaluate(llama, _windows(3, 16))
    assert res.window_nll is not None and res.window_nll.shape == (3,)
    assert float(res.window_nll.mean()) == pytest.approx(res.nll, rel=1e-12)
