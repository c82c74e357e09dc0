"""A disk cache of the dense model's evaluation, so comparing many sparse runs scores the dense
model once.

Every ``actlab sparsify --eval`` scores the dense model on the held-out windows first (40 s
for SmolLM2-135M, decode protocol, 16384 tokens, on a quiet 2-core Xeon, where hashing the
key takes 0.5 s); the sparse rows are measured against it
(agreement, per-window NLL for the paired interval). That result depends only on what goes
into it, so it is stored under a key that hashes all of it:

    key = sha256(format version, torch version, model class, every parameter and buffer
                 (name, dtype, shape, bytes), the windows (bytes), protocol, prefill,
                 batch size, device type, thread count)

and a later evaluation with the same key reads it back instead of running the model: the
same numbers, bit for bit, that a fresh evaluation on this machine gives (the tests check
this). The thread count is in the key because it may change float32 sums in the last bits,
and a near tie in an argmax with them. The dense prefill KV caches of the decode protocol are
not stored (they are large); a sparse evaluation that finds none runs its own dense prefill,
which is the same computation (see :mod:`actlab.sparse._eval`).

Entry: ``<root>/<key>.safetensors`` holding ``argmax`` (int64 ``[windows, scored/window]``)
and ``window_nll`` (float64 ``[windows]``) with the scalar fields as JSON metadata; written to
a temporary file and renamed, so a killed run leaves no partial entry. An unreadable or
inconsistent entry is reported in one warning, removed and evaluated again; an unwritable
root is reported and the run goes on. ``root`` defaults to ``$ACTLAB_CACHE/eval``
(``~/.cache/actlab/eval``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["DenseCache", "default_dense_cache"]

_FORMAT = 1
_SCALARS = (
    "protocol", "ppl", "nll", "windows", "window", "prefill", "scored", "seconds",
    "cpu_seconds", "batch_size", "realised", "overhead", "by_projection",
)  # fmt: skip


def default_dense_cache() -> Path:
    """``$ACTLAB_CACHE/eval`` (default ``~/.cache/actlab/eval``)."""
    from actlab.models.pretrained import actlab_cache_dir

    return actlab_cache_dir() / "eval"


def _update(h: Any, t: torch.Tensor) -> None:
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(flat.view(torch.uint8).numpy())  # the raw bytes, whatever the dtype


class DenseCache:
    """Dense evaluation results on disk under ``root`` (see the module docstring)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_dense_cache()

    def key(
        self,
        model: nn.Module,
        windows: torch.Tensor,
        protocol: str,
        prefill: int,
        batch_size: int,
    ) -> str:
        """The entry name of ``model`` scored on ``windows`` with these settings."""
        h = hashlib.sha256()
        device = next(model.parameters()).device.type
        head = [_FORMAT, torch.__version__, type(model).__qualname__, protocol, prefill,
                batch_size, device, torch.get_num_threads()]  # fmt: skip
        h.update(json.dumps(head).encode())
        for name, t in sorted(model.state_dict(keep_vars=False).items()):
            h.update(name.encode())
            _update(h, t)
        h.update(b"windows")
        _update(h, windows)
        return h.hexdigest()[:32]

    def path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def load(self, key: str, windows: int) -> dict[str, Any] | None:
        """The stored fields of entry ``key`` (for ``windows`` windows), or None."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {})["fields"])
                argmax = f.get_tensor("argmax")
                window_nll = f.get_tensor("window_nll")
            if (
                not isinstance(meta, dict)
                or set(meta) != set(_SCALARS)
                or meta["windows"] != windows
                or argmax.dtype != torch.long
                or argmax.ndim != 2
                or argmax.shape[0] != windows
                or window_nll.dtype != torch.float64
                or tuple(window_nll.shape) != (windows,)
                or argmax.numel() != meta["scored"]
            ):
                raise ValueError("its fields do not match the evaluation")
        except Exception as e:  # noqa: BLE001 -- any unreadable entry: evaluate again
            warnings.warn(
                f"actlab: dense cache entry {path} is unreadable ({type(e).__name__}: {e}); "
                "evaluating the dense model again",
                RuntimeWarning,
                stacklevel=2,
            )
            path.unlink(missing_ok=True)
            return None
        return {**meta, "argmax": argmax, "window_nll": window_nll}

    def save(self, key: str, fields: dict[str, Any]) -> Path | None:
        """Store ``fields`` (the scalars plus ``argmax`` and ``window_nll``) as entry ``key``;
        the path, or None (with a warning) when the root cannot be written."""
        from safetensors.torch import save_file

        path = self.path(key)
        meta = {k: fields[k] for k in _SCALARS}
        tensors = {
            "argmax": fields["argmax"].detach().cpu().contiguous(),
            "window_nll": fields["window_nll"].detach().cpu().double().contiguous(),
        }
        tmp: str | None = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{key}.", suffix=".tmp")
            os.close(fd)
            save_file(tensors, tmp, metadata={"fields": json.dumps(meta)})
            os.replace(tmp, path)
            tmp = None
        except OSError as e:
            warnings.warn(
                f"actlab: cannot write the dense cache under {self.root} ({e}); the result is "
                "not cached (set ACTLAB_CACHE to a writable folder)",
                RuntimeWarning,
                stacklevel=2,
            )
            return None
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        return path
