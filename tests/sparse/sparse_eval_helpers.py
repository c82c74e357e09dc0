"""Helpers of the sparsify tests: a character tokenizer and a tiny Llama saved as an HF folder."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

CHARS = sorted(set(string.printable) - set("\x0b\x0c\r"))
CHAR_VOCAB = 4 + len(CHARS)  # <pad> <s> </s> <unk> + printable ASCII


def char_tokenizer() -> Any:
    """A character-level fast tokenizer (no BOS added), built offline."""
    from tokenizers import Tokenizer, decoders, models

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for c in CHARS:
        vocab[c] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tk.decoder = decoders.Fuse()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def char_llama(layers: int = 2, seed: int = 0, hidden: int = 64) -> nn.Module:
    """LlamaForCausalLM over the character vocabulary: GQA (4 heads, 2 kv), d_ff 2 * hidden."""
    cfg = transformers.LlamaConfig(
        vocab_size=CHAR_VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg).eval()


def save_char_llama(folder: Path, **kwargs: Any) -> Path:
    """A tiny Llama + its character tokenizer written as a Hugging Face folder."""
    char_llama(**kwargs).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


class BosTokenizer:
    """A minimal tokenizer that starts its encodings with BOS (id 1): ids = ord(c) % 90 + 4."""

    bos_token_id = 1

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        ids = [ord(c) % 90 + 4 for c in text]
        return {"input_ids": ([1] if add_special_tokens else []) + ids}


def teal_char_llama(sparsity: float = 0.5) -> tuple[nn.Module, Any, torch.Tensor]:
    """A TEAL-sparsified :func:`char_llama` in ``"decode"`` mode, its state and a 12-token
    prompt ``[1, 12]`` (calibrated on 96 random tokens, seed 0)."""
    from actlab.sparse import make_method

    model = char_llama()
    method = make_method("teal", sparsity=sparsity)
    g = torch.Generator().manual_seed(0)
    state = method.calibrate(model, [torch.randint(4, 100, (2, 48), generator=g)])
    method.apply(model, state).set_mode("decode")
    return model, state, torch.randint(4, 100, (1, 12), generator=g)
