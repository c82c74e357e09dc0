"""Checkpoints (safetensors, written atomically), JSON files and learnable-scalar snapshots.

A checkpoint is the model's state dict in safetensors format (tied weights stored once) plus
string metadata. It is written to a temporary file in the same directory and moved into
place with ``os.replace``, so a crash mid-write never leaves a half-written checkpoint.
Nothing here unpickles anything.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "write_json_atomic",
    "activation_scalars",
    "atomic_write",
]


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then move the temporary file onto ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=1, allow_nan=True) + "\n"

    def write(p: Path) -> None:
        p.write_text(text, encoding="utf-8")

    return atomic_write(path, write)


def save_checkpoint(
    model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None
) -> Path:
    """Save ``model``'s weights to ``path`` (safetensors); ``metadata`` values are JSON-encoded."""
    from safetensors.torch import save_model

    meta = {str(k): json.dumps(v) for k, v in (metadata or {}).items()}
    return atomic_write(path, lambda p: save_model(model, str(p), metadata=meta))


def load_checkpoint(
    model: nn.Module, path: str | Path, *, strict: bool = True, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load weights saved by :func:`save_checkpoint` into ``model``; returns the metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    missing, unexpected = load_model(model, str(path), strict=strict, device=str(device))
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    return {k: json.loads(v) for k, v in raw.items()}


def activation_scalars(model: nn.Module, max_numel: int = 64) -> dict[str, float | list[float]]:
    """Current values of every learnable parameter owned directly by an activation module.

    Activation modules are actlab activations (they carry ``activation_name``) and PyTorch's
    own ``nn.PReLU``; keys are full parameter paths such as ``blocks.0.mlp.act.eps``.
    Scalars come out as floats, small vectors (e.g. PolyReLU coefficients) as lists.
    """
    out: dict[str, float | list[float]] = {}
    for mod_name, mod in model.named_modules():
        if not (getattr(type(mod), "activation_name", "") or isinstance(mod, nn.PReLU)):
            continue
        for p_name, p in mod.named_parameters(recurse=False):
            if not p.requires_grad or p.numel() > max_numel:
                continue
            key = f"{mod_name}.{p_name}" if mod_name else p_name
            v = p.detach().float().cpu()
            out[key] = float(v) if v.ndim == 0 else [float(x) for x in v.flatten()]
    return out
