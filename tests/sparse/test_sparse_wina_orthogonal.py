"""WINA's column orthogonalisation on a tiny random Llama: the dense function is unchanged (to
float tolerance), the reference projection of every block has orthogonal columns, WINA runs on
the rotated model, unsupported models get a one-line error."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers
from sparse_helpers import logits, randomise_norms
from torch import nn

from actlab.sparse import SparseError, find_blocks, make_method, orthogonalize


@pytest.mark.parametrize("reference", ["k_proj", "gate_proj"])
def test_dense_function_unchanged(
    llama: nn.Module, batches: list[torch.Tensor], reference: str
) -> None:
    randomise_norms(llama)
    dense = copy.deepcopy(llama)
    keys = set(llama.state_dict())
    rep = orthogonalize(llama, reference=reference)
    q0 = "model.layers.0.self_attn.q_proj"
    assert not torch.allclose(llama.get_submodule(q0).weight, dense.get_submodule(q0).weight)
    assert set(llama.state_dict()) == keys
    for a, b in zip(logits(llama, batches), logits(dense, batches)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4), float((a - b).abs().max())
    for block in find_blocks(llama):
        w = llama.get_submodule(block.proj(reference)).weight.detach().double()
        gram = w.T @ w
        off = gram - torch.diag(torch.diag(gram))
        assert float(off.abs().max()) <= 1e-4 * float(gram.abs().max())
        q = rep.bases[block.path]
        assert torch.allclose(q.T @ q, torch.eye(q.shape[0], dtype=q.dtype), atol=1e-10)
    for name, p in llama.named_parameters():
        if "norm" in name:
            assert torch.equal(p, torch.ones_like(p)), name
    prompt = batches[0][:1, :6]
    a = llama.generate(prompt, max_new_tokens=6, do_sample=False)
    b = dense.generate(prompt, max_new_tokens=6, do_sample=False)
    assert torch.equal(a, b)


def test_wina_on_rotated_model(llama: nn.Module, batches: list[torch.Tensor]) -> None:
    orthogonalize(llama)
    method = make_method("wina", sparsity=0.5)
    report = method.apply(llama, method.calibrate(llama, batches))
    report.reset_counts()
    logits(llama, batches)
    assert all(abs(r - 0.5) <= 0.01 for r in report.realised().values())


def test_errors(llama: nn.Module, batches: list[torch.Tensor]) -> None:
    with pytest.raises(SparseError, match="reference"):
        orthogonalize(llama, reference="v_proj")
    orthogonalize(llama)
    with pytest.raises(SparseError, match="already orthogonalised"):
        orthogonalize(llama)
    sparse = copy.deepcopy(llama)
    del sparse.actlab_wina_orthogonal
    del sparse.config.actlab_rotation
    method = make_method("wina", sparsity=0.5)
    method.apply(sparse, method.calibrate(sparse, batches))
    with pytest.raises(SparseError, match="dense model first"):
        orthogonalize(sparse)
    cfg = transformers.GemmaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
    )
    gemma = transformers.GemmaForCausalLM(cfg).eval()
    for bad, why in ((gemma, "not Gemma"), (nn.Sequential(nn.Linear(4, 4)), "Llama-style")):
        with pytest.raises(SparseError, match=why) as e:
            orthogonalize(bad)
        assert "\n" not in str(e.value)


def test_tied_embeddings_untied(batches: list[torch.Tensor]) -> None:
    cfg = transformers.LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    randomise_norms(model)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    dense = copy.deepcopy(model)
    orthogonalize(model)
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert not model.config.tie_word_embeddings
    for a, b in zip(logits(model, batches), logits(dense, batches)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
