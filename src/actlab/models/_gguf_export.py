"""Write a Hugging Face Llama or Gemma-3 causal LM as a float GGUF file that llama.cpp reads.

``export_gguf(model, path, dtype="f32", reference=None)`` writes the model's own tensors
(F32, or F16 / BF16 for the matrices; 1-D norm weights stay F32 as llama.cpp expects) with the
architecture hyper-parameters taken from its config, so llama.cpp decodes exactly the weights
that PyTorch holds. GGUF's layout differs from Hugging Face's in two places, both undone by
transformers' GGUF loader:

- Llama's ``q_proj`` / ``k_proj`` rows are stored per head in interleaved rotary order.
  With ``h`` heads of width ``d`` (``k_proj`` uses the key/value heads), HF row
  ``r = head*d + half*(d/2) + i`` (``half`` in {0, 1}) is GGUF row ``head*d + 2*i + half``;
- Gemma's RMSNorm multiplies by ``1 + w``; GGUF stores ``1 + w`` itself (every ``*norm.weight``).

``reference`` (a GGUF of the same model, e.g. the quantised file a model was loaded from)
supplies the tokenizer (``tokenizer.*``) and descriptive (``general.*``) metadata, so token ids
mean the same in both; its architecture keys must agree with the ones derived from the config
(otherwise it is the wrong file and the export stops). Without one, the file carries no
vocabulary (``tokenizer.ggml.model = "none"``): llama.cpp then decodes token ids but cannot
tokenize text.

The GGUF format and tensor names are those of the ``gguf`` package (llama.cpp's gguf-py,
https://github.com/ggml-org/llama.cpp/tree/master/gguf-py); the file is streamed tensor by
tensor, written to a temporary name and renamed into place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["GGUFExportError", "export_gguf", "gguf_hparams"]

_DTYPES = ("f32", "f16", "bf16")
_SUPPORTED = {"llama": "llama", "gemma3_text": "gemma3", "gemma3": "gemma3"}
_SWA_PATTERN = 6  # llama.cpp's Gemma-3 layout: every 6th layer global, the rest sliding
_COPIED_PREFIXES = ("general.", "tokenizer.")
_NOT_COPIED = {"general.architecture", "general.file_type", "general.quantization_version"}


class GGUFExportError(ValueError):
    """The model or its reference GGUF cannot be written as a llama.cpp GGUF file."""


@dataclass(frozen=True)
class _KV:
    value: Any
    kind: str  # "u32" | "f32"


def _gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise GGUFExportError(
            "writing GGUF files needs the gguf package: pip install 'actlab[hf]' (or gguf)"
        ) from None
    return gguf


def _arch(config: Any) -> str:
    kind = str(getattr(config, "model_type", ""))
    if kind not in _SUPPORTED:
        raise GGUFExportError(
            f"cannot export model_type {kind!r} to GGUF: supported are Llama ('llama') and "
            "Gemma-3 ('gemma3_text') causal LMs"
        )
    return _SUPPORTED[kind]


def _rope(config: Any, layer_type: str | None = None) -> dict[str, Any]:
    """The rope parameters of ``config`` (transformers 5 ``rope_parameters`` or 4.x fields)."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and layer_type is not None and layer_type in params:
        params = params[layer_type]
    if not isinstance(params, dict):
        scaling = getattr(config, "rope_scaling", None) or {}
        theta = getattr(
            config,
            "rope_local_base_freq" if layer_type == "sliding_attention" else "rope_theta",
            None,
        )
        params = {"rope_theta": theta, "rope_type": scaling.get("rope_type", "default")}
    if params.get("rope_type", "default") != "default":
        raise GGUFExportError(
            f"rope_type {params['rope_type']!r} is not exported (only plain RoPE); "
            "export a model without rope scaling"
        )
    return params


def _head_dim(config: Any) -> int:
    hd = getattr(config, "head_dim", None)
    return int(hd) if hd else int(config.hidden_size) // int(config.num_attention_heads)


def gguf_hparams(config: Any) -> dict[str, _KV]:
    """The llama.cpp architecture keys (``<arch>.*``) derived from a HF config."""
    arch = _arch(config)
    hd = _head_dim(config)
    kv: dict[str, _KV] = {
        "context_length": _KV(int(config.max_position_embeddings), "u32"),
        "embedding_length": _KV(int(config.hidden_size), "u32"),
        "block_count": _KV(int(config.num_hidden_layers), "u32"),
        "feed_forward_length": _KV(int(config.intermediate_size), "u32"),
        "attention.head_count": _KV(int(config.num_attention_heads), "u32"),
        "attention.head_count_kv": _KV(int(config.num_key_value_heads), "u32"),
        "attention.layer_norm_rms_epsilon": _KV(float(config.rms_norm_eps), "f32"),
        "attention.key_length": _KV(hd, "u32"),
        "attention.value_length": _KV(hd, "u32"),
        "vocab_size": _KV(int(config.vocab_size), "u32"),
    }
    if arch == "llama":
        for flag in ("attention_bias", "mlp_bias"):
            if getattr(config, flag, False):
                raise GGUFExportError(f"Llama with {flag}=True is not exported (no bias tensors)")
        kv["rope.freq_base"] = _KV(float(_rope(config)["rope_theta"]), "f32")
        kv["rope.dimension_count"] = _KV(hd, "u32")
    else:
        for cap in ("attn_logit_softcapping", "final_logit_softcapping"):
            if getattr(config, cap, None) is not None:
                raise GGUFExportError(f"Gemma-3 with {cap} set is not exported; set it to None")
        scalar = getattr(config, "query_pre_attn_scalar", hd)
        if int(scalar) != hd:
            raise GGUFExportError(
                f"query_pre_attn_scalar={scalar} differs from head_dim={hd}: llama.cpp scales "
                "Gemma-3 queries by 1/sqrt(head_dim)"
            )
        n = int(config.num_hidden_layers)
        want = [
            "full_attention" if i % _SWA_PATTERN == _SWA_PATTERN - 1 else "sliding_attention"
            for i in range(n)
        ]
        if list(getattr(config, "layer_types", want)) != want:
            raise GGUFExportError(
                "Gemma-3 layer_types must follow llama.cpp's layout (every 6th layer "
                "full_attention, the others sliding_attention)"
            )
        kv["rope.freq_base"] = _KV(float(_rope(config, "full_attention")["rope_theta"]), "f32")
        swa_theta = _rope(config, "sliding_attention")["rope_theta"]
        kv["rope.freq_base_swa"] = _KV(float(swa_theta), "f32")
        kv["attention.sliding_window"] = _KV(int(config.sliding_window), "u32")
    return kv


def _permute_rotary(w: Tensor, heads: int) -> Tensor:
    """HF ``[h*d, in]`` (rotary halves) -> GGUF row order (rotary pairs interleaved)."""
    rows = w.shape[0]
    d = rows // heads
    # [h, 2, d/2, in] -> [h, d/2, 2, in]: HF (half, i) becomes GGUF row 2*i + half
    return w.reshape(heads, 2, d // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _tensors(model: nn.Module, arch: str) -> list[tuple[str, Tensor]]:
    """``(gguf name, float32 tensor in GGUF layout)`` for every weight, in module order."""
    gguf = _gguf()
    config: Any = model.config
    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(arch_id, int(config.num_hidden_layers))
    tied = bool(getattr(config, "tie_word_embeddings", False))
    out: list[tuple[str, Tensor]] = []
    seen: set[str] = set()
    for hf_name, t in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when output.weight is absent
        base, _, suffix = hf_name.rpartition(".")
        name = names.get_name(base)
        if name is None or suffix != "weight":
            raise GGUFExportError(f"no GGUF name for tensor {hf_name!r} of a {arch} model")
        name = f"{name}.weight"
        if name in seen:
            raise GGUFExportError(f"two tensors map to GGUF name {name!r}")
        seen.add(name)
        w = t.detach().to(device="cpu", dtype=torch.float32)
        if arch == "llama" and name.endswith(".attn_q.weight"):
            w = _permute_rotary(w, int(config.num_attention_heads))
        elif arch == "llama" and name.endswith(".attn_k.weight"):
            w = _permute_rotary(w, int(config.num_key_value_heads))
        elif arch == "gemma3" and name.endswith("norm.weight"):
            w = w + 1.0  # Gemma RMSNorm scales by (1 + w); GGUF stores the factor itself
        out.append((name, w.contiguous()))
    return out


def _encode(w: Tensor, dtype: str) -> tuple[np.ndarray, Any]:
    """The array to write and its raw GGML type (``None``: inferred from the numpy dtype)."""
    gguf = _gguf()
    if w.dim() < 2 or dtype == "f32":  # norms and vectors stay F32 in every llama.cpp file
        return w.numpy(), None
    if dtype == "f16":
        return w.to(torch.float16).numpy(), None
    # numpy has no bfloat16: write the raw 16-bit patterns, typed BF16
    return w.to(torch.bfloat16).view(torch.int16).numpy(), gguf.GGMLQuantizationType.BF16


def _read_reference(reference: Path, arch: str) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    """The reference's ``<arch>.*`` values and its copyable ``general.*``/``tokenizer.*`` fields."""
    gguf = _gguf()
    try:
        reader = gguf.GGUFReader(str(reference))
    except (OSError, ValueError) as e:
        raise GGUFExportError(f"cannot read reference GGUF {reference}: {e}") from None
    ref_arch = reader.fields["general.architecture"].contents()
    if ref_arch != arch:
        raise GGUFExportError(
            f"reference GGUF {reference.name} is a {ref_arch!r} model, the model is {arch!r}: "
            "pass the GGUF this model came from"
        )
    hparams: dict[str, Any] = {}
    copied: list[tuple[Any, ...]] = []
    for key, field in reader.fields.items():
        if key.startswith(arch + "."):
            hparams[key[len(arch) + 1 :]] = field.contents()
        elif key.startswith(_COPIED_PREFIXES) and key not in _NOT_COPIED:
            sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            copied.append((key, field.contents(), field.types[0], sub))
    return hparams, copied


def _check_reference(mine: dict[str, _KV], theirs: dict[str, Any], reference: Path) -> None:
    bad = []
    for key, kv in mine.items():
        if key not in theirs:
            continue
        a, b = kv.value, theirs[key]
        same = np.float32(a) == np.float32(b) if kv.kind == "f32" else a == b
        if not same:
            bad.append(f"{key}: model {a} vs reference {b}")
    if bad:
        raise GGUFExportError(
            f"reference GGUF {reference.name} does not describe this model ("
            + "; ".join(bad)
            + "): pass the GGUF this model came from"
        )


def export_gguf(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    dtype: str = "f32",
    reference: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``model`` (HF Llama / Gemma-3 causal LM) to ``path`` as a GGUF file; returns it.

    ``dtype``: ``"f32"`` (exactly the model's float32 values), ``"f16"`` or ``"bf16"`` for
    the matrices. ``reference``: a GGUF of the same model whose tokenizer and ``general.*``
    metadata are copied (see the module docstring).
    """
    if dtype not in _DTYPES:
        raise GGUFExportError(f"unknown dtype {dtype!r}: use one of {', '.join(_DTYPES)}")
    gguf = _gguf()
    config = getattr(model, "config", None)
    if config is None:
        raise GGUFExportError("export_gguf needs a Hugging Face model (with a .config)")
    arch = _arch(config)
    hparams = gguf_hparams(config)
    copied: list[tuple[Any, ...]] = []
    if reference is not None:
        theirs, copied = _read_reference(Path(reference), arch)
        _check_reference(hparams, theirs, Path(reference))
    tensors = _tensors(model, arch)

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    try:
        kinds = {"u32": writer.add_uint32, "f32": writer.add_float32}
        for key, kv in hparams.items():
            kinds[kv.kind](f"{arch}.{key}", kv.value)
        file_type = {
            "f32": gguf.LlamaFileType.ALL_F32,
            "f16": gguf.LlamaFileType.MOSTLY_F16,
            "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        }[dtype]
        writer.add_file_type(int(file_type))
        if copied:
            for key, value, vtype, sub in copied:
                writer.add_key_value(key, value, vtype, sub_type=sub)
        else:
            writer.add_tokenizer_model("none")
        for name, w in tensors:
            arr, raw = _encode(w, dtype)
            writer.add_tensor_info(name, arr.shape, arr.dtype, arr.nbytes, raw_dtype=raw)
        writer.write_header_to_file(tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for _name, w in tensors:  # one tensor in memory at a time beyond the model itself
            writer.write_tensor_data(_encode(w, dtype)[0])
        writer.close()
        os.replace(tmp, out)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return out
