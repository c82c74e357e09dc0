"""transformers integration: ACT2FN registration, config sync, save/load, and real models.

The ``realmodel`` tests load MiniLM-L6 and SmolLM2-135M from their offline pip packages,
once per module; SmolLM2's first load builds the fp32 cache (about half a minute).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")

import actlab.integrations.transformers as hf  # noqa: E402
from actlab import swap_activations  # noqa: E402
from actlab.activations import GELU as ActlabGELU  # noqa: E402
from actlab.activations import CRReLU, Swish, kernel_mode  # noqa: E402
from actlab.models import ModelUnavailableError, embed_sentences, load_minilm, load_smollm2  # noqa: E402
from actlab.surgery import identify_activation  # noqa: E402


@pytest.fixture(autouse=True)
def _eager_kernels():
    with kernel_mode("eager"):  # no torch.compile on the shared CPUs
        yield


def tiny_bert(hidden_act: str = "gelu") -> nn.Module:
    from transformers import AutoModel, BertConfig

    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        hidden_act=hidden_act,
    )
    return AutoModel.from_config(config).eval()


def act_sites(model: nn.Module, kind: str) -> list[str]:
    return [n for n, m in model.named_modules() if identify_activation(m) == kind]


# ---------------------------------------------------------------- registration
def test_register_keeps_transformers_keys() -> None:
    from transformers.activations import ACT2CLS, ACT2FN, GELUActivation, SiLUActivation

    before = {k: ACT2CLS[k] for k in ("gelu", "silu", "swish", "relu", "gelu_new", "prelu")}
    added = hf.register()
    assert "crrelu" in added or "crrelu" in ACT2CLS
    assert not set(before) & set(added)
    assert {k: ACT2CLS[k] for k in before} == before
    assert type(ACT2FN["gelu"]) is GELUActivation and type(ACT2FN["silu"]) is SiLUActivation
    assert type(ACT2FN["swish"]) is nn.SiLU
    assert isinstance(ACT2FN["crrelu"], CRReLU) and ACT2FN["crrelu"] is not ACT2FN["crrelu"]
    assert hf.register() == []  # idempotent


def test_register_call_string_and_prefix() -> None:
    from transformers.activations import ACT2FN

    assert hf.register("crrelu(eps=0.02)") in (["crrelu(eps=0.02)"], [])
    assert ACT2FN["crrelu(eps=0.02)"].eps.item() == pytest.approx(0.02)
    hf.register("actlab:swish(beta=1.5)")
    assert isinstance(ACT2FN["actlab:swish(beta=1.5)"], Swish)
    with pytest.warns(UserWarning, match="Use 'actlab:swish' for actlab's"):
        hf.register("swish")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hf.register("gelu")  # same function as transformers' gelu: nothing to warn about
    with pytest.raises(ValueError, match="unknown activation"):
        hf.register("crelu_typo")


def test_config_hidden_act_builds_actlab_module() -> None:
    hf.register()
    model = tiny_bert("crrelu")
    act = model.encoder.layer[0].intermediate.intermediate_act_fn
    assert isinstance(act, CRReLU)
    hf.register("crrelu(eps=0.02)")
    model = tiny_bert("crrelu(eps=0.02)")
    assert model.encoder.layer[1].intermediate.intermediate_act_fn.eps.item() == pytest.approx(0.02)
    out = model(input_ids=torch.randint(0, 64, (2, 5))).last_hidden_state
    assert torch.isfinite(out).all()


def test_hidden_act_for() -> None:
    assert hf.hidden_act_for(nn.ReLU()) == "relu"
    assert hf.hidden_act_for(nn.LeakyReLU(0.2)) is None  # not transformers' default
    assert hf.hidden_act_for(ActlabGELU()) == "gelu"
    assert hf.hidden_act_for(CRReLU(eps=0.02)) == "crrelu(eps=0.02)"
    assert hf.hidden_act_kind("gelu_pytorch_tanh") == "gelu_tanh"
    assert hf.hidden_act_kind("actlab:swish(beta=1.5)") == "swish"
    assert hf.hidden_act_kind("no_such_act") is None


# ---------------------------------------------------------------- config sync + save/load
def test_swap_updates_config_and_round_trips(tmp_path) -> None:
    model = tiny_bert()
    ids = torch.randint(0, 64, (2, 7))
    report = swap_activations(model, {"gelu": "crrelu"}, example_inputs={"input_ids": ids})
    key = "crrelu"
    assert model.config.hidden_act == key and report.config == {"hidden_act": ["gelu", key]}
    with torch.no_grad():
        for i, layer in enumerate(model.encoder.layer):
            layer.intermediate.intermediate_act_fn.eps.fill_(0.1 * (i + 1))
    expected = model(input_ids=ids).last_hidden_state
    model.save_pretrained(tmp_path)
    loaded = hf.from_pretrained(str(tmp_path)).eval()
    eps = [la.intermediate.intermediate_act_fn.eps.item() for la in loaded.encoder.layer]
    assert eps == pytest.approx([0.1, 0.2])
    torch.testing.assert_close(loaded(input_ids=ids).last_hidden_state, expected)


def test_partial_swap_leaves_config_alone() -> None:
    model = tiny_bert()
    report = swap_activations(model, {"gelu": "crrelu"}, where="encoder.layer.0")
    assert len(report) == 1 and model.config.hidden_act == "gelu"
    assert any("config.hidden_act left as 'gelu'" in n for n in report.notes)


def test_identity_swap_keeps_config() -> None:
    model = tiny_bert()
    report = swap_activations(model, {"gelu": "gelu"})
    assert model.config.hidden_act == "gelu" and report.config == {}


# ---------------------------------------------------------------- real models
def _load(loader):  # type: ignore[no-untyped-def]
    try:
        return loader()
    except ModelUnavailableError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def minilm():  # type: ignore[no-untyped-def]
    return _load(load_minilm)


@pytest.fixture(scope="module")
def smollm2():  # type: ignore[no-untyped-def]
    return _load(load_smollm2)


def _minilm_batch(tokenizer):  # type: ignore[no-untyped-def]
    return tokenizer(
        ["A cat sits on the mat.", "Stocks fell sharply today."], padding=True, return_tensors="pt"
    )


@pytest.mark.realmodel
def test_minilm_has_six_gelu_sites(minilm) -> None:  # type: ignore[no-untyped-def]
    model, _ = minilm
    assert len(act_sites(model, "gelu")) == 6
    report = swap_activations(copy.deepcopy(model), {"gelu": "gelu"})
    assert report.counts() == {"gelu": 6} and report.found == {"gelu": 6, "tanh": 1}


@pytest.mark.realmodel
def test_minilm_identity_and_real_swap(minilm) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = minilm
    batch = _minilm_batch(tokenizer)
    with torch.no_grad():
        ref = model(**batch).last_hidden_state
        same = copy.deepcopy(model)
        swap_activations(same, {"gelu": "gelu"}, example_inputs=dict(batch))
        torch.testing.assert_close(same(**batch).last_hidden_state, ref, atol=1e-6, rtol=0)
        changed = copy.deepcopy(model)
        swap_activations(changed, {"gelu": "crrelu"}, example_inputs=dict(batch))
        assert (changed(**batch).last_hidden_state - ref).abs().max() > 1e-2


@pytest.mark.realmodel
def test_minilm_crrelu_save_and_load(minilm, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoModel

    model, tokenizer = minilm
    model = copy.deepcopy(model)
    swap_activations(model, {"gelu": "crrelu"})
    values = [0.011, 0.022, -0.033, 0.044, -0.055, 0.066]
    with torch.no_grad():
        for v, layer in zip(values, model.encoder.layer, strict=True):
            layer.intermediate.intermediate_act_fn.eps.fill_(v)
    batch = _minilm_batch(tokenizer)
    with torch.no_grad():
        expected = model(**batch).last_hidden_state
    model.save_pretrained(tmp_path)
    hf.register(model.config.hidden_act)  # what a loading process does first
    for loaded in (AutoModel.from_pretrained(tmp_path), hf.from_pretrained(str(tmp_path))):
        acts = [la.intermediate.intermediate_act_fn for la in loaded.eval().encoder.layer]
        assert all(isinstance(a, CRReLU) for a in acts)
        assert [a.eps.item() for a in acts] == pytest.approx(values)
        with torch.no_grad():
            torch.testing.assert_close(loaded(**batch).last_hidden_state, expected)


@pytest.mark.realmodel
def test_minilm_embeddings_rank_paraphrases(minilm) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = minilm
    emb = embed_sentences(
        model,
        tokenizer,
        ["A man is eating food.", "A man eats a meal.", "The stock market crashed."],
    )
    assert emb.shape == (3, 384)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.3


@pytest.mark.realmodel
def test_smollm2_silu_sites_and_swaps(smollm2) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = smollm2
    sites = act_sites(model, "silu")
    assert len(sites) == 30 and all(s.endswith("mlp.act_fn") for s in sites)
    ids = tokenizer("The capital of France is", return_tensors="pt")
    # swaps in place (no 0.5 GB deepcopy): this test is the fixture's only user
    with torch.no_grad():
        ref = model(**ids).logits
        report = swap_activations(model, {"silu": "silu"}, example_inputs=dict(ids))
        assert report.counts() == {"silu": 30} and model.config.hidden_act == "silu"
        torch.testing.assert_close(model(**ids).logits, ref, atol=1e-6, rtol=0)
        report = swap_activations(model, {"silu": "crrelu"})
        assert model.config.hidden_act == "crrelu" and len(report) == 30
        assert (model(**ids).logits - ref).abs().max() > 1e-2


# ---------------------------------------------------------------- SmolLM2 cache writer
class _Tokenizer:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def save_pretrained(self, path) -> None:  # type: ignore[no-untyped-def]
        if self.fail:
            raise OSError("disk full")
        (path / "tokenizer_config.json").write_text("{}")


def _tiny_llama() -> nn.Module:
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    return AutoModelForCausalLM.from_config(config).eval()


def test_cache_writer_round_trips_tied_weights(tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    from actlab.models import pretrained

    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"0" * 10)
    target = tmp_path / "cache" / "tiny"
    model = _tiny_llama()
    pretrained._write_cache(model, _Tokenizer(), target, gguf)
    assert pretrained._cache_is_valid(target, gguf)
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny"]  # no temp folders left
    loaded = AutoModelForCausalLM.from_pretrained(target).eval()
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    ids = torch.randint(0, 50, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    gguf.write_bytes(b"0" * 11)  # a different source file invalidates the cache
    assert not pretrained._cache_is_valid(target, gguf)


def test_cache_writer_leaves_nothing_behind_on_failure(tmp_path) -> None:
    from actlab.models import pretrained

    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"0")
    target = tmp_path / "cache" / "tiny"
    with pytest.raises(OSError, match="disk full"):
        pretrained._write_cache(_tiny_llama(), _Tokenizer(fail=True), target, gguf)
    assert list(target.parent.iterdir()) == []
    assert not pretrained._cache_is_valid(target, gguf)


# ---------------------------------------------------------------- from_pretrained picks the class
def _tiny_causal_llama() -> nn.Module:
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=False,  # a separate lm_head: dropping it would lose weights
    )
    return AutoModelForCausalLM.from_config(config).eval()


def test_causal_lm_round_trips_with_lm_head_and_swapped_activation(tmp_path) -> None:
    from transformers import LlamaForCausalLM, LlamaModel

    model = _tiny_causal_llama()
    ids = torch.randint(0, 50, (2, 6))
    swap_activations(model, {"silu": "crrelu"})
    assert model.config.hidden_act == "crrelu"
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            layer.mlp.act_fn.eps.fill_(0.05 * (i + 1))
        expected = model(input_ids=ids).logits
    model.save_pretrained(tmp_path)
    assert model.config.architectures == ["LlamaForCausalLM"]

    loaded = hf.from_pretrained(tmp_path).eval()
    assert type(loaded) is LlamaForCausalLM
    torch.testing.assert_close(loaded.lm_head.weight, model.lm_head.weight, rtol=0, atol=0)
    acts = [layer.mlp.act_fn for layer in loaded.model.layers]
    assert all(isinstance(a, CRReLU) for a in acts)
    assert [a.eps.item() for a in acts] == pytest.approx([0.05, 0.10])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, expected)
    # the explicit override still loads the bare backbone
    base = hf.from_pretrained(str(tmp_path), auto_class="AutoModel")
    assert type(base) is LlamaModel and not hasattr(base, "lm_head")


def test_model_class_follows_config_architectures() -> None:
    import transformers
    from transformers import GPT2Config, LlamaConfig

    llama = LlamaConfig(vocab_size=50, hidden_size=16, num_attention_heads=2)
    gpt2 = GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50)

    def pick(config, archs, **kw):  # type: ignore[no-untyped-def]
        config.architectures = archs
        return hf.model_class(config, **kw)

    assert pick(llama, ["LlamaForCausalLM"]) is transformers.LlamaForCausalLM
    assert pick(gpt2, ["GPT2LMHeadModel"]) is transformers.GPT2LMHeadModel
    assert pick(llama, ["LlamaForSequenceClassification"]) is (
        transformers.LlamaForSequenceClassification
    )
    assert pick(llama, None) is transformers.AutoModel
    assert pick(llama, []) is transformers.AutoModel
    # a class for another config, or a name transformers lacks: the Auto class of its head
    assert pick(llama, ["GPT2LMHeadModel"]) is transformers.AutoModelForCausalLM
    assert pick(llama, ["MyRemoteModelForCausalLM"]) is transformers.AutoModelForCausalLM
    assert pick(llama, ["MyRemoteModelForMaskedLM"]) is transformers.AutoModelForMaskedLM
    # names that are not model classes are never used
    for hostile in (["pipeline"], ["os.system"], ["__class__"], [5], "LlamaForCausalLM"):
        assert pick(llama, hostile) is transformers.AutoModel
    assert pick(llama, ["LlamaForCausalLM"], auto_class="AutoModel") is transformers.AutoModel
    assert pick(llama, None, auto_class=transformers.LlamaModel) is transformers.LlamaModel
    with pytest.raises(ValueError, match="auto_class='pipeline' is not a transformers model"):
        pick(llama, None, auto_class="pipeline")


def test_gpt2_lm_head_round_trips(tmp_path) -> None:
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=16)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(tmp_path)
    loaded = hf.from_pretrained(tmp_path).eval()
    assert type(loaded) is GPT2LMHeadModel
    ids = torch.randint(0, 50, (1, 5))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


@pytest.fixture(scope="module")
def gemma3():  # type: ignore[no-untyped-def]
    from actlab.models import load_gemma3

    return _load(load_gemma3)


@pytest.mark.realmodel
def test_gemma3_loads_as_a_working_language_model(gemma3) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = gemma3
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert model.config.num_hidden_layers == 18
    assert model.config.hidden_activation == "gelu_pytorch_tanh"
    ids = tokenizer("The capital of France is Paris. The capital of Italy is", return_tensors="pt")
    with torch.no_grad():
        out = model(**ids, labels=ids["input_ids"])
    # a dequantised but intact model: low perplexity on plain English (a broken load is ~1e5)
    assert float(out.loss.exp()) < 100
    nxt = tokenizer.decode(out.logits[0, -1].argmax())
    assert "Rome" in nxt
