"""Helpers of the decode tests: a tiny random Gemma 3 (sliding windows, q/k and sandwich norms)."""

from __future__ import annotations

import torch
from sparse_helpers import VOCAB
from torch import nn

# (architecture, method, packed weight dtype) the native decode step and generate are checked on
DECODE_CASES = [
    ("llama", "dense", torch.float32),
    ("llama", "teal", torch.float32),
    ("llama", "teal", torch.bfloat16),
    ("llama", "cats", torch.float32),
    ("llama", "cats", torch.bfloat16),
    ("gemma3", "dense", torch.float32),
    ("gemma3", "teal", torch.float32),
    ("gemma3", "cats", torch.bfloat16),
]


def tiny_gemma3() -> nn.Module:
    """Gemma3ForCausalLM: hidden 64, 4 heads / 1 kv head, window 4, 3 layers (2 sliding)."""
    import transformers

    cfg = transformers.Gemma3TextConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=4,  # shorter than the prompt: windows in prefill and in decode
        max_position_embeddings=64,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        query_pre_attn_scalar=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    model = transformers.Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial norm weights (initialised at 0 = identity scale)
        for n, p in model.named_parameters():
            if "norm" in n:
                p.normal_(0.0, 0.3)
    return model
