"""Loading causal LMs by name, and saving / reloading a sparsified model with its state.

A sparsified model is saved as a Hugging Face folder (``save_sparse``)::

    out/config.json              the model's config + "actlab_sparsity": {method, params,
                                 state, mode, model (fingerprint), calibration, base (where
                                 the dense model came from, when given)}
    out/model.safetensors        the (unchanged, dense) weights: the sparse modules share them
    out/tokenizer*, generation_config.json
    out/sparsity.safetensors     the thresholds (SparsityState) + the model fingerprint

and reloaded with ``load_sparse(out)`` (model, tokenizer, state, report; ``model.generate``
works). The fingerprint names the model the state was calibrated on: its name, the number
of parameters, a SHA-256 of the config's structural fields and the mean |W| of the
projections of the first and last block (compared to 1%, so a bf16 copy of the same weights
matches and other weights do not; weights that hold a state's tuned row scales, low-rank
corrections and weight changes are measured with them undone). :func:`apply_saved_state`
refuses a state calibrated on another model with one line.

A state with tuned normalisation gains (:func:`actlab.sparse.tune_gains`) also names its
``tuning`` in config.json; the weights file then holds the tuned gains (the model was saved
with them applied) and the state file holds them too, so applying the state to the original
dense model gives the same model. Tuned row scales, low-rank corrections and weight changes
(``TuneConfig(rows=True, rank=r, weights=True)``) are in the saved weights as well;
config.json's ``actlab_row_scales`` (a digest of them) tells ``apply`` on the reloaded model
that its weights hold them already, so they are not applied twice.

Model names: ``smollm2`` (SmolLM2-135M-Instruct), ``gemma3`` (Gemma-3-270M, when this actlab
has its loader) or a local Hugging Face folder (``config.json`` + weights + tokenizer).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from actlab.sparse._base import SparsityReport, apply_state, scales_digest, scales_held
from actlab.sparse._modules import check_mode
from actlab.sparse._sites import PROJECTIONS, find_blocks
from actlab.sparse._state import FORMAT_KEY, SparseError, SparsityState, load_state

__all__ = [
    "CONFIG_KEY",
    "MODEL_KEY",
    "MODELS",
    "STATE_FILE",
    "SparseModel",
    "apply_saved_state",
    "check_fingerprint",
    "load_causal_lm",
    "load_saved_state",
    "load_sparse",
    "model_fingerprint",
    "read_fingerprint",
    "resolve_model",
    "save_sparse",
    "saved_info",
    "save_state_with_fingerprint",
]

CONFIG_KEY = "actlab_sparsity"  # the entry in config.json
MODEL_KEY = "actlab.sparse.model"  # the fingerprint in the state file's metadata
STATE_FILE = "sparsity.safetensors"
# offline model name -> loader in actlab.models.pretrained (looked up when used)
MODELS = {"smollm2": "load_smollm2", "gemma3": "load_gemma3"}
_STRUCTURE = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "hidden_activation",
    "tie_word_embeddings",
)
_WEIGHT_RTOL = 1e-2


# ---------------------------------------------------------------- models by name
def resolve_model(name: str) -> str:
    """``name`` if it is a known model or a folder holding ``config.json``; else one line."""
    if name in MODELS:
        from actlab.models import pretrained

        if not hasattr(pretrained, MODELS[name]):
            raise SparseError(
                f"model {name!r} is not available in this actlab (no "
                f"actlab.models.pretrained.{MODELS[name]}); use smollm2 or a local folder"
            )
        return name
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return str(path)
    if path.is_dir():
        raise SparseError(f"{path} has no config.json; give a Hugging Face model folder")
    raise SparseError(
        f"unknown model {name!r}: give {', '.join(MODELS)} or a local Hugging Face folder "
        "(config.json, weights, tokenizer)"
    )


def load_causal_lm(
    name: str, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` of an offline model name or a local folder, eval mode."""
    key = resolve_model(name)
    if key in MODELS:
        from actlab.models import pretrained

        loader = getattr(pretrained, MODELS[key])
        takes_dtype = "dtype" in inspect.signature(loader).parameters
        model, tok = loader(dtype=dtype) if takes_dtype else loader()
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(key, dtype=dtype)
        tok = AutoTokenizer.from_pretrained(key)
    if hasattr(model.config, CONFIG_KEY):  # a saved sparse model: its weights are dense
        delattr(model.config, CONFIG_KEY)
    return model.to(device=device, dtype=dtype).eval(), tok


# ---------------------------------------------------------------- fingerprints
def _n_params(model: nn.Module) -> int:
    seen: set[int] = set()
    n = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


def _weight_stats(model: nn.Module, held: SparsityState | None = None) -> list[float]:
    blocks = find_blocks(model)
    out: list[float] = []
    for block in (blocks[0], blocks[-1]):
        for n in PROJECTIONS:
            path = block.proj(n)
            w = model.get_submodule(path).weight
            assert isinstance(w, torch.Tensor)
            a = w.detach().double()
            if held is not None and path in held.scales:  # the dense weights: rows unscaled
                a = a / held.scales[path].double().to(a.device).unsqueeze(1)
            if held is not None and path in held.lowrank:  # ... and the correction taken off
                u, v = held.lowrank[path]
                a = a - (u.double() @ v.double()).to(a.device)
            if held is not None and path in held.deltas:  # ... and the weight change
                a = a - held.deltas[path].double().to(a.device)
            out.append(float(a.abs().mean()))
    return out


def _held(model: nn.Module, state: SparsityState | None) -> SparsityState | None:
    """``state`` when ``model``'s weights hold its tuned row scales, low-rank corrections or
    weight changes (applied or reloaded), else None."""
    digest = None if state is None else scales_digest(state)
    return state if digest is not None and scales_held(model) == digest else None


def model_fingerprint(
    model: nn.Module, name: str = "", state: SparsityState | None = None
) -> dict[str, Any]:
    """``{name, params, config_sha256, weights}`` of a causal LM (see the module docstring).

    With ``state``, weights that hold its tuned row scales, low-rank corrections and weight
    changes are measured with them undone, so the fingerprint is the dense model's."""
    cfg = getattr(model, "config", None)
    conf: dict[str, Any] = cfg.to_dict() if cfg is not None and hasattr(cfg, "to_dict") else {}
    structure = {k: conf[k] for k in _STRUCTURE if k in conf}
    digest = hashlib.sha256(json.dumps(structure, sort_keys=True, default=str).encode())
    return {
        "name": name or str(conf.get("_name_or_path") or type(model).__name__),
        "params": _n_params(model),
        "config_sha256": digest.hexdigest(),
        "weights": _weight_stats(model, _held(model, state)),
    }


def check_fingerprint(
    model: nn.Module, expected: dict[str, Any], state: SparsityState | None = None
) -> None:
    """One-line :class:`SparseError` unless ``model`` is the model ``expected`` describes
    (``state``: see :func:`model_fingerprint`)."""
    got = model_fingerprint(model, state=state)
    was = f"{expected.get('name', '?')} ({expected.get('params', '?')} parameters)"
    fix = "calibrate the method on this model instead"
    if got["config_sha256"] != expected.get("config_sha256") or got["params"] != expected.get(
        "params"
    ):
        raise SparseError(
            f"this sparsity state was calibrated on {was}; this model is different "
            f"({got['params']} parameters, config {got['config_sha256'][:12]} vs "
            f"{str(expected.get('config_sha256'))[:12]}); {fix}"
        )
    want = expected.get("weights") or []
    if len(want) != len(got["weights"]) or any(
        not math.isclose(a, b, rel_tol=_WEIGHT_RTOL) for a, b in zip(got["weights"], want)
    ):
        raise SparseError(
            f"this sparsity state was calibrated on {was}; this model has the same "
            f"architecture but other weights; {fix}"
        )


def save_state_with_fingerprint(
    state: SparsityState, path: str | Path, fingerprint: dict[str, Any]
) -> Path:
    """``state.save(path)`` with the model's fingerprint added to the file's metadata."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    p = Path(path)
    tmp = state.save(p.with_name(p.name + ".plain"))
    with safe_open(str(tmp), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    meta[MODEL_KEY] = json.dumps(fingerprint, sort_keys=True)
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(p)
    return p


def read_fingerprint(path: str | Path) -> dict[str, Any] | None:
    """The model fingerprint stored in a state file (or the state file of a folder written by
    :func:`save_sparse`), or None (a state saved by ``state.save``)."""
    from safetensors import safe_open

    try:
        with safe_open(str(_state_path(path)), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # noqa: BLE001 - load_state reports a bad file in one line
        return None
    text = meta.get(MODEL_KEY)
    if text is None or FORMAT_KEY not in meta:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise SparseError(f"{path}: the model fingerprint is not JSON") from None
    return value if isinstance(value, dict) else None


def _state_path(path: str | Path) -> Path:
    """A state file, or the state file a folder's config.json names (default STATE_FILE)."""
    p = Path(path)
    if not p.is_dir():
        return p
    info = saved_info(p) or {}
    return p / str(info.get("state") or STATE_FILE)


def load_saved_state(path: str | Path) -> SparsityState:
    """The :class:`SparsityState` in a state file, or in the state file of a folder written by
    :func:`save_sparse` (the one its config.json names)."""
    return load_state(_state_path(path))


def apply_saved_state(model: nn.Module, path: str | Path) -> SparsityReport:
    """Apply a saved state (file, or folder holding ``sparsity.safetensors``) to ``model``,
    refusing (one line) a state calibrated on another model."""
    return _apply_checked(model, _state_path(path))[1]


def _apply_checked(model: nn.Module, path: Path) -> tuple[SparsityState, SparsityReport]:
    state = load_state(path)
    expected = read_fingerprint(path)
    if expected is not None:
        check_fingerprint(model, expected, state)
    return state, apply_state(model, state)


# ---------------------------------------------------------------- save / load
@dataclass
class SparseModel:
    """A reloaded sparsified model: ``model`` (sparse modules installed), ``tokenizer``,
    ``state``, ``report`` (modes, realised counts) and ``info`` (the config entry)."""

    model: nn.Module
    tokenizer: Any
    state: SparsityState
    report: SparsityReport
    info: dict[str, Any] = field(default_factory=dict)


def save_sparse(
    out: str | Path,
    model: nn.Module,
    tokenizer: Any,
    state: SparsityState,
    *,
    name: str = "",
    mode: str = "decode",
    calibration: dict[str, Any] | None = None,
    base: str = "",
) -> Path:
    """Save a model sparsified with ``state`` (or its dense original) to the folder ``out``.

    ``base`` names where the dense model came from (a model name or a folder); ``actlab
    sparsify OUT`` loads it as the dense baseline of ``--eval`` / ``--bench``."""
    mode = check_mode(mode)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    fingerprint = model_fingerprint(model, name, state)
    info = {
        "method": state.method,
        "params": state.params,
        "state": STATE_FILE,
        "mode": mode,
        "model": {k: v for k, v in fingerprint.items() if k != "weights"},
        "calibration": calibration or {},
        **({"base": base} if base else {}),
        **({"tuning": state.tuning} if state.gains else {}),
    }
    config = model.config  # type: ignore[union-attr]
    setattr(config, CONFIG_KEY, info)
    try:
        model.save_pretrained(folder)  # type: ignore[operator]
    finally:
        delattr(config, CONFIG_KEY)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    save_state_with_fingerprint(state, folder / STATE_FILE, fingerprint)
    return folder


def saved_info(path: str | Path) -> dict[str, Any] | None:
    """The ``actlab_sparsity`` entry of a folder written by :func:`save_sparse` (method, params,
    state file, mode, model fingerprint, calibration, tuning), or None for any other folder
    or path. A config.json that is not JSON, or whose entry is not an object, is one line."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        return None
    try:
        conf = json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise SparseError(f"{config_file} is not JSON ({e})") from None
    info = conf.get(CONFIG_KEY) if isinstance(conf, dict) else None
    if info is not None and not isinstance(info, dict):
        raise SparseError(f"{config_file}: {CONFIG_KEY!r} is not an object; save the model again")
    return info


def load_sparse(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    mode: str | None = None,
) -> SparseModel:
    """Reload a folder written by :func:`save_sparse`: model, tokenizer and sparsity.

    ``mode`` (``"all"``, ``"decode"``, ``"last-half"``) defaults to the one saved.
    """
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no sparsified model at {folder} (config.json missing)")
    info = saved_info(folder)
    if info is None:
        raise SparseError(
            f"{folder} is not a sparsified model (no {CONFIG_KEY!r} in config.json); "
            "write one with `actlab sparsify MODEL --out DIR`"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype or "auto")
    if hasattr(loaded.config, CONFIG_KEY):
        delattr(loaded.config, CONFIG_KEY)
    model: nn.Module = loaded.eval()
    model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    state_file = folder / str(info.get("state") or STATE_FILE)
    state, report = _apply_checked(model, state_file)
    report.set_mode(mode or str(info.get("mode") or "all"))
    return SparseModel(model, tokenizer, state, report, info)
