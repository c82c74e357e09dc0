"""export_gguf: GGUF files read back (gguf's reader, transformers' GGUF loader) equal the source.

Tiny random Llama (GQA, untied head) and Gemma-3 (tied, q/k norms, sliding layers) built from
configs; the layout changes (rotary row order, Gemma's ``1 + w`` norms) are undone by an
independent index formula and by transformers' own loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

from actlab.models import GGUFExportError, export_gguf  # noqa: E402


def _llama(tied: bool = False) -> Any:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=96, hidden_size=64, intermediate_size=80, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=tied, rope_theta=5000.0,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(cfg).eval()


def _gemma() -> Any:
    torch.manual_seed(1)
    cfg = transformers.Gemma3TextConfig(
        vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=6,
        num_attention_heads=2, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
        max_position_embeddings=128, sliding_window=16,
    )  # fmt: skip
    model = transformers.Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_()  # zero-initialised otherwise: the +1 would go untested
    return model


def _read(path: Path) -> dict[str, tuple[np.ndarray, str]]:
    reader = gguf.GGUFReader(str(path))
    return {t.name: (np.array(t.data), t.tensor_type.name) for t in reader.tensors}


def _unrotate(w: np.ndarray, heads: int) -> np.ndarray:
    """GGUF row ``h*d + 2*i + half`` back to HF row ``h*d + half*d/2 + i`` (index by index)."""
    d = w.shape[0] // heads
    out = np.empty_like(w)
    for h in range(heads):
        for i in range(d // 2):
            for half in (0, 1):
                out[h * d + half * (d // 2) + i] = w[h * d + 2 * i + half]
    return out


def test_llama_f32_reads_back_exactly(tmp_path: Path) -> None:
    model = _llama()
    path = export_gguf(model, tmp_path / "tiny.gguf")
    got = _read(path)
    cfg = model.config
    sd = model.state_dict()
    assert len(got) == len(sd) == 2 * 9 + 3  # embeddings, final norm, untied output
    assert got["output.weight"][1] == "F32"
    np.testing.assert_array_equal(got["output.weight"][0], sd["lm_head.weight"].numpy())
    np.testing.assert_array_equal(got["token_embd.weight"][0], sd["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        pre = f"model.layers.{i}."
        q = _unrotate(got[f"blk.{i}.attn_q.weight"][0], cfg.num_attention_heads)
        k = _unrotate(got[f"blk.{i}.attn_k.weight"][0], cfg.num_key_value_heads)
        np.testing.assert_array_equal(q, sd[pre + "self_attn.q_proj.weight"].numpy())
        np.testing.assert_array_equal(k, sd[pre + "self_attn.k_proj.weight"].numpy())
        same = [
            ("attn_v", "self_attn.v_proj"),
            ("ffn_down", "mlp.down_proj"),
            ("attn_norm", "input_layernorm"),
            ("ffn_norm", "post_attention_layernorm"),
        ]
        for ours, theirs in same:
            np.testing.assert_array_equal(
                got[f"blk.{i}.{ours}.weight"][0], sd[pre + theirs + ".weight"]
            )
    fields = gguf.GGUFReader(str(path)).fields
    assert fields["llama.attention.head_count_kv"].contents() == 2
    assert fields["llama.rope.freq_base"].contents() == 5000.0
    assert fields["tokenizer.ggml.model"].contents() == "none"


@pytest.mark.parametrize("build", [_llama, _gemma], ids=["llama", "gemma3"])
def test_transformers_loads_the_export_to_the_same_model(tmp_path: Path, build: Any) -> None:
    model = build()
    export_gguf(model, tmp_path / "m.gguf")
    back = transformers.AutoModelForCausalLM.from_pretrained(
        str(tmp_path), gguf_file="m.gguf", dtype=torch.float32
    ).eval()
    sd, sd2 = model.state_dict(), back.state_dict()
    assert set(sd) == set(sd2)
    for k in sd:  # Gemma norms make a float32 round trip through 1 + w: within one ulp of 1
        torch.testing.assert_close(sd2[k], sd[k], rtol=0, atol=0 if "norm" not in k else 3e-7)
    ids = torch.randint(0, 96, (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)


def test_gemma_norms_are_stored_plus_one_and_head_tied(tmp_path: Path) -> None:
    model = _gemma()
    got = _read(export_gguf(model, tmp_path / "g.gguf"))
    sd = model.state_dict()
    assert "output.weight" not in got  # tied: llama.cpp reuses token_embd
    w = got["blk.0.attn_q_norm.weight"][0].astype(np.float64)
    np.testing.assert_allclose(
        w, sd["model.layers.0.self_attn.q_norm.weight"].double() + 1, atol=1e-7
    )
    np.testing.assert_array_equal(
        got["blk.3.attn_q.weight"][0], sd["model.layers.3.self_attn.q_proj.weight"].numpy()
    )  # no rotary permutation for Gemma-3 (llama.cpp uses NEOX rope there)


HALVES = [("f16", torch.float16, "F16"), ("bf16", torch.bfloat16, "BF16")]


@pytest.mark.parametrize(("dtype", "torch_dtype", "ggml"), HALVES)
def test_half_exports_round_matrices_only(
    tmp_path: Path, dtype: str, torch_dtype: Any, ggml: str
) -> None:
    model = _llama(tied=True)
    got = _read(export_gguf(model, tmp_path / "h.gguf", dtype=dtype))
    sd = model.state_dict()
    arr, kind = got["blk.1.ffn_up.weight"]
    assert kind == ggml
    want = sd["model.layers.1.mlp.up_proj.weight"].to(torch_dtype)
    if ggml == "BF16":  # the reader hands back the raw 16-bit patterns
        np.testing.assert_array_equal(
            arr.view(np.int16).reshape(want.shape), want.view(torch.int16).numpy()
        )
    else:
        np.testing.assert_array_equal(arr, want.numpy())
    assert got["blk.1.attn_norm.weight"][1] == "F32"  # norms stay F32


def test_reference_supplies_tokenizer_and_must_match(tmp_path: Path) -> None:
    ref = tmp_path / "ref.gguf"
    w = gguf.GGUFWriter(str(ref), "llama")
    w.add_uint32("llama.block_count", 2)
    w.add_uint32("llama.embedding_length", 64)
    w.add_string("general.name", "tiny reference")
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(96)])
    w.add_bos_token_id(1)
    w.add_tensor("token_embd.weight", np.zeros((96, 64), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out = export_gguf(_llama(), tmp_path / "o.gguf", reference=ref)
    fields = gguf.GGUFReader(str(out)).fields
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert fields["tokenizer.ggml.tokens"].contents()[95] == "t95"
    assert fields["tokenizer.ggml.bos_token_id"].contents() == 1
    assert fields["general.name"].contents() == "tiny reference"
    assert fields["general.file_type"].contents() == 0  # ALL_F32, not the reference's

    bigger = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=96,
            hidden_size=64,
            intermediate_size=80,
            num_hidden_layers=3,
            num_attention_heads=4,
        )  # fmt: skip
    )
    with pytest.raises(GGUFExportError, match="block_count: model 3 vs reference 2"):
        export_gguf(bigger, tmp_path / "x.gguf", reference=ref)
    assert not (tmp_path / "x.gguf").exists()


def test_bad_input_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GGUFExportError, match="unknown dtype 'q4'"):
        export_gguf(_llama(), tmp_path / "a.gguf", dtype="q4")
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2))
    with pytest.raises(GGUFExportError, match="cannot export model_type 'gpt2'"):
        export_gguf(gpt2, tmp_path / "b.gguf")
    gemma = _gemma()
    gemma.config.layer_types = ["full_attention"] * 6
    with pytest.raises(GGUFExportError, match="every 6th layer"):
        export_gguf(gemma, tmp_path / "c.gguf")
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@pytest.mark.slow  # ~10 s: importing llama_cpp and generate on a loaded 2-core machine
@pytest.mark.parametrize("build", [_llama, _gemma], ids=["llama", "gemma3"])
def test_llama_cpp_decodes_the_export_like_transformers(tmp_path: Path, build: Any) -> None:
    """Where llama-cpp-python is installed (the ``llamacpp`` extra): llama.cpp's greedy tokens
    on the F32 export equal transformers' on the source model."""
    llama_cpp = pytest.importorskip("llama_cpp")
    model = build()
    path = export_gguf(model, tmp_path / "m.gguf")
    prompt = torch.randint(3, 96, (1, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model.generate(prompt, max_new_tokens=8, do_sample=False)[0, 8:].tolist()
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=32, n_threads=1, verbose=False)
    try:
        llm.eval(prompt[0].tolist())
        got: list[int] = []
        for _ in range(8):
            logits = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
            got.append(int(np.ctypeslib.as_array(logits, shape=(96,)).argmax()))
            llm.eval([got[-1]])
    finally:
        llm.close()
    assert got == want
