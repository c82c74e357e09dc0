"""replace_modules on tiny randomly initialised transformers models (no download).

Tied embeddings (GPT-2, Llama with ``tie_word_embeddings``), the ``config.hidden_act`` hook,
rollback of the hook's change, hooks and parameters of untouched modules, save/load.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")

import actlab.integrations.transformers as hf  # noqa: E402
from actlab import create_activation  # noqa: E402
from actlab.activations import CRReLU, kernel_mode  # noqa: E402
from actlab.surgery import (  # noqa: E402
    ReplacementReport,
    SurgeryError,
    identify_activation,
    replace_modules,
    replacement_hooks,
    swap_activations,
)


@pytest.fixture(autouse=True)
def _eager_kernels():
    with kernel_mode("eager"):  # no torch.compile on the shared CPUs
        yield


def tiny_gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    return GPT2LMHeadModel(config).eval()


def tiny_llama(tie: bool = True) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tie,
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


class Scaled(nn.Module):
    """Wraps a Linear, keeping its parameters (how a sparsity or LoRA wrapper looks)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


IDS = torch.tensor([[1, 5, 7, 3, 2]])


def test_gpt2_tying_survives_activation_and_head_replacement() -> None:
    model = tiny_gpt2()
    before = model(input_ids=IDS).logits
    tanh_gelu = lambda p, old: nn.GELU(approximate="tanh")  # noqa: E731 - same function
    report = replace_modules(model, "gelu_tanh", tanh_gelu)
    assert report.paths == ["transformer.h.0.mlp.act", "transformer.h.1.mlp.act"]
    assert model.lm_head.weight is model.transformer.wte.weight
    torch.testing.assert_close(model(input_ids=IDS).logits, before, atol=1e-5, rtol=0)

    report = replace_modules(model, lambda p, m: p == "lm_head", lambda p, old: Scaled(old))
    assert model.lm_head.inner.weight is model.transformer.wte.weight
    torch.testing.assert_close(model(input_ids=IDS).logits, before, atol=1e-5, rtol=0)


def test_gpt2_cutting_the_tie_is_refused_and_rolled_back() -> None:
    model = tiny_gpt2()
    head = model.lm_head
    with pytest.raises(SurgeryError, match=r"lm_head.weight with transformer.wte.weight"):
        replace_modules(model, lambda p, m: p == "lm_head", lambda p, o: nn.Linear(16, 50))
    assert model.lm_head is head and head.weight is model.transformer.wte.weight


def test_llama_hidden_act_hook_updates_config_and_round_trips(tmp_path) -> None:
    assert "transformers-config" in replacement_hooks()
    model = tiny_llama()
    report = replace_modules(model, "silu", lambda p, old: create_activation("crrelu"))
    assert len(report) == 2 and report.config == {"hidden_act": ["silu", "crrelu"]}
    assert model.config.hidden_act == "crrelu"
    assert model.lm_head.weight is model.model.embed_tokens.weight
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            layer.mlp.act_fn.eps.fill_(0.05 * (i + 1))
    expected = model(input_ids=IDS).logits
    model.save_pretrained(tmp_path)
    loaded = hf.from_pretrained(str(tmp_path)).eval()
    assert isinstance(loaded.model.layers[1].mlp.act_fn, CRReLU)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    torch.testing.assert_close(loaded(input_ids=IDS).logits, expected)


def test_replacing_non_activations_leaves_the_config_alone() -> None:
    model = tiny_llama()
    report = replace_modules(
        model, lambda p, m: p.endswith("mlp.down_proj"), lambda p, old: Scaled(old)
    )
    assert len(report) == 2 and report.config == {} and model.config.hidden_act == "silu"


def test_a_failing_hook_rolls_back_the_config_and_the_modules() -> None:
    model = tiny_llama()
    acts = [layer.mlp.act_fn for layer in model.model.layers]
    params = {n: id(p) for n, p in model.named_parameters()}

    def fail(m: nn.Module, report: ReplacementReport) -> None:
        assert m.config.hidden_act == "crrelu"  # the global hook ran first
        raise RuntimeError("downstream hook failed")

    with pytest.raises(RuntimeError, match="downstream hook failed"):
        replace_modules(model, "silu", lambda p, o: CRReLU(), on_replaced=fail)
    assert model.config.hidden_act == "silu"
    assert [layer.mlp.act_fn for layer in model.model.layers] == acts
    assert {n: id(p) for n, p in model.named_parameters()} == params


def test_hooks_and_untouched_parameters_survive_on_llama() -> None:
    model = tiny_llama()
    fired: list[str] = []
    mlp0 = model.model.layers[0].mlp
    mlp0.register_forward_hook(lambda m, a, o: fired.append("mlp-parent"))
    mlp0.register_forward_pre_hook(lambda m, a: fired.append("mlp-parent-pre"))
    model.model.norm.register_forward_hook(lambda m, a, o: fired.append("norm"))
    model.model.embed_tokens.register_forward_pre_hook(lambda m, a: fired.append("embed-pre"))
    params = dict(model.named_parameters())

    report = swap_activations(model, {"silu": "crrelu"}, example_inputs={"input_ids": IDS})
    assert report.counts() == {"silu": 2} and report.config == {"hidden_act": ["silu", "crrelu"]}
    assert fired == ["embed-pre", "mlp-parent-pre", "mlp-parent", "norm"]  # the check's forward
    fired.clear()
    model(input_ids=IDS)
    assert fired == ["embed-pre", "mlp-parent-pre", "mlp-parent", "norm"]
    after = dict(model.named_parameters())
    assert all(after[n] is p for n, p in params.items())
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert all(identify_activation(layer.mlp.act_fn) == "crrelu" for layer in model.model.layers)
