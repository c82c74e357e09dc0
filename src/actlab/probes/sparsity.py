"""Activation sparsity: zero fractions, dead units over a window, TLS and CLS_L.

For activations a (tokens x units) and a threshold τ, a unit is *active* on a token when
``a > τ`` (criterion ``"positive"``, the default: "exceeded τ", for ReLU-like activations
"positive" at τ = 0; a GELU / SiLU unit whose outputs never leave the negative dip counts as
inactive) or ``|a| > τ`` (criterion ``"abs"``; with τ = 0 this is "nonzero").

- zero fraction        mean[a == 0];       near-zero fraction  mean[|a| <= near_zero]
- dead-unit rate       fraction of units never active over a window of N tokens; a unit is
                       "dynamically dead" when dead in the current window (our definition: the
                       AP paper's exact one could not be retrieved). Reported for the last
                       completed window, plus the running (partial) window.
- TLS (BlockFFN, Song et al. 2025)  mean over tokens of the fraction of units a token does
                       not activate.
- CLS_L (BlockFFN)     1 - |union of units active in L consecutive tokens| / N, averaged over
                       non-overlapping chunks within sequences (L = 8 by default).

Padding: when the model is called with ``attention_mask=`` (or ``set_context`` gives one) and
a layer's output is (B, T, D) with the mask's (B, T), only real tokens count: the dead-unit
peaks and window lengths, the sampled rows (zero fractions, TLS) and the chunks (CLS chunks
are made of real tokens only).

Cost per hook call: the dead-unit test is one max-reduction over the whole output (a unit
active on a single token must count as alive); the rest runs on ``sample`` sampled token
rows (zero fractions, TLS) and ``sample // L`` sampled chunks (CLS), staged and reduced in
bulk with on-device accumulators (no host sync). In train mode samples come from every
``train_stride``-th call (see ProbeContext).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from actlab.probes.base import (
    Probe,
    Row,
    check_float,
    check_int,
    first_tensor,
    sample_chunks,
    sample_rows,
)
from actlab.probes.manager import register_probe

__all__ = ["SparsityProbe", "active_mask", "tls", "cls"]

Criterion = Literal["abs", "positive"]


def active_mask(a: Tensor, tau: float = 0.0, criterion: Criterion = "positive") -> Tensor:
    """Boolean mask of active entries."""
    if criterion == "positive":
        return a > tau
    if criterion == "abs":
        return a.abs() > tau
    raise ValueError(f"criterion must be 'abs' or 'positive', got {criterion!r}")


def tls(a: Tensor, tau: float = 0.0, criterion: Criterion = "positive") -> float:
    """Token-level sparsity of a (tokens, units) matrix (plain reference implementation)."""
    return float(1.0 - active_mask(a, tau, criterion).float().mean(dim=-1).mean())


def cls(a: Tensor, length: int = 8, tau: float = 0.0, criterion: Criterion = "positive") -> float:
    """Chunk-level sparsity CLS_L of one sequence (tokens, units): non-overlapping chunks."""
    n_chunks = a.shape[0] // length
    if n_chunks == 0:
        raise ValueError(f"sequence of {a.shape[0]} tokens is shorter than the chunk {length}")
    m = active_mask(a[: n_chunks * length], tau, criterion).reshape(n_chunks, length, -1)
    return float(1.0 - m.any(dim=1).float().mean())


@register_probe(description="zero / near-zero fractions, dead units over a window, TLS, CLS_8")
class SparsityProbe(Probe):
    """Zero / near-zero fractions, dead-unit rate over a window, TLS and CLS_L per layer."""

    name = "sparsity"
    target = "activation"

    def __init__(
        self,
        *,
        tau: float = 0.0,
        near_zero: float = 1e-2,
        criterion: Criterion = "positive",
        window: int = 8192,
        chunk: int = 8,
        history: int = 64,
        where: str | list[str] | None = None,
    ) -> None:
        super().__init__(where=where)
        if criterion not in ("abs", "positive"):
            raise ValueError(f"criterion must be 'abs' or 'positive', got {criterion!r}")
        self.tau = check_float("tau", tau)
        self.near_zero = check_float("near_zero", near_zero, 0.0)
        self.criterion = criterion
        self.window, self.chunk = check_int("window", window), check_int("chunk", chunk)
        self.history = check_int("history", history)
        self.reset()

    def reset(self) -> None:
        # per layer: [Σ zeros, Σ near-zeros, Σ active cells, Σ chunk-active cells]
        self.acc: dict[str, Tensor] = {}
        self.counts: dict[str, list[int]] = {}  # [tokens, chunks] (host ints: no sync)
        self.peak: dict[str, Tensor] = {}  # per-unit max activity in the current window
        self.window_rows: dict[str, int] = {}  # rows seen in the current window
        self.dead: dict[str, Tensor] = {}  # ring buffer of the last `history` dead rates
        self.windows_done: dict[str, int] = {}
        self.units: dict[str, int] = {}
        self._reset_staging()

    def update(self, name: str, module: nn.Module, output: Any) -> None:
        t = first_tensor(output)
        if t is None or t.ndim < 2 or t.numel() == 0:
            return
        d = int(t.shape[1] if t.ndim == 4 else t.shape[-1])
        mask = self.ctx.token_mask(t)
        full = t
        if mask is not None:  # real tokens only, as rows (n_real, D)
            t = t.reshape(-1, d).index_select(0, mask.rows_on(t.device))
            if t.shape[0] == 0:
                return
        self.units[name] = d
        # dead units, every call: a max (for "abs" also a min) reduction over the whole output
        # folded into the window's per-unit peak in place
        dims = (0, 2, 3) if t.ndim == 4 else tuple(range(t.ndim - 1))
        hi = t.amax(dim=dims)
        lo = t.amin(dim=dims) if self.criterion == "abs" else None
        peak = self.peak.get(name)
        if peak is None or peak.shape != hi.shape:
            peak = self.peak[name] = hi.float() if lo is None else torch.maximum(hi, -lo).float()
            self.window_rows[name] = 0
        else:
            torch.maximum(peak, hi, out=peak)
            if lo is not None:
                torch.maximum(peak, -lo, out=peak)
        self.window_rows[name] += t.numel() // d
        if self.window_rows[name] >= self.window:
            hist = self.dead.get(name)
            if hist is None:
                hist = self.dead[name] = torch.full((self.history,), float("nan"), device=t.device)
            n = self.windows_done.get(name, 0)
            hist[n % self.history] = (peak <= self.tau).float().mean()
            self.windows_done[name] = n + 1
            del self.peak[name]
        # sampled statistics: token rows (zero fractions, TLS) and, when there is a sequence
        # axis, chunks of consecutive tokens (CLS)
        if self.sampling(name, module):
            g = self.ctx.rng(f"{self.name}/{name}")
            x = sample_rows(t, self.ctx.sample, g)
            chunks = sample_chunks(full, self.chunk, max(1, self.ctx.sample // self.chunk), g, mask)
            self.stage(name, (x, chunks))

    def reduce(self, name: str, items: list[tuple[Any, ...]]) -> None:
        x = torch.cat([it[0] for it in items]).float()  # (n, D)
        mag = x.abs()
        chunk_list = [it[1] for it in items if it[1] is not None]
        n_chunks = 0
        chunk_active = mag.new_zeros(())
        if chunk_list:
            ch = torch.cat(chunk_list).float()  # (m, L, D)
            n_chunks = int(ch.shape[0])
            chunk_active = self._active(ch).any(dim=1).sum(dtype=torch.float32)
        vec = torch.stack(
            [
                (x == 0).sum(dtype=torch.float32),
                (mag <= self.near_zero).sum(dtype=torch.float32),
                self._active(x, mag).sum(dtype=torch.float32),
                chunk_active,
            ]
        ).double()
        if name in self.acc:
            self.acc[name] += vec
        else:
            self.acc[name] = vec
            self.counts[name] = [0, 0]
        self.counts[name][0] += int(x.shape[0])
        self.counts[name][1] += n_chunks

    def _active(self, x: Tensor, mag: Tensor | None = None) -> Tensor:
        if self.criterion == "positive":
            return x > self.tau
        return (x.abs() if mag is None else mag) > self.tau

    def summary(self) -> dict[str, Row]:
        self.flush()
        out: dict[str, Row] = {}
        for name, acc in self.acc.items():
            z, near, active, chunk_active = acc.tolist()
            n, nc = self.counts[name]
            d = self.units[name]
            cells, chunk_cells = n * d, nc * d
            done = self.windows_done.get(name, 0)
            last = float(self.dead[name][(done - 1) % self.history]) if done else None
            peak = self.peak.get(name)
            partial = float((peak <= self.tau).float().mean()) if peak is not None else 1.0
            out[name] = {
                "units": self.units[name],
                "zero_frac": z / cells if cells else float("nan"),
                "near_zero_frac": near / cells if cells else float("nan"),
                "tls": 1.0 - active / cells if cells else float("nan"),
                f"cls_{self.chunk}": 1.0 - chunk_active / chunk_cells
                if chunk_cells
                else float("nan"),
                "dead_rate": last if last is not None else partial,
                "dead_rate_partial": partial,
                "dead_window": self.window,
                "dead_windows_done": done,
                "tokens_sampled": int(n),
            }
        return out
