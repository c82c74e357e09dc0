"""The native decode step of :class:`~actlab.sparse.LeanDecoder`: every block in one C++ call.

``csrc/decode_step.cpp`` (``torch.classes.actlab_sparse.DecodeStack``) runs one decode position
through all blocks of a Llama-family or Gemma-3 decoder (RMSNorm, q|k|v, q/k norms, RoPE,
attention over the static KV cache with GQA and sliding windows, o, the sandwich norms, the
gated MLP, residual adds, and the change of basis between blocks of a rotated model): the
formulas are in that file's header. Python then runs only the embedding, the final norm and
the LM head (``model.lm_head``: the dense packed kernel after ``use_kernels(..., head=True)``,
else torch), so the per-token cost is one call instead of ~10 module calls per block.

Each projection becomes a member of its site:

- a :class:`~actlab.sparse.SparseLinear` on the kernel path (:func:`~actlab.sparse.use_kernels`)
  contributes its packed ``W^T`` (float32 or bfloat16, shared with the module path: no copy)
  and its threshold; siblings packed together (q|k|v or gate|up with one threshold) are one
  member;
- a plain ``nn.Linear`` (the dense model) contributes its own float32 weight (no copy), run
  by torch's ``mv`` (the BLAS call of the module path) inside the step;
- a :class:`~actlab.sparse.SparseGatedMLP` on the kernel path becomes the fused gated kernel.

Anything else (a sparse module without kernels, WINA's top-k sites, hooks on a block's modules,
non-float32 or non-CPU weights, another norm or MLP class) keeps the module path; the reason is
kept in ``LeanDecoder.native_reason``. The step counts the entries each sparse site saw and
dropped; :meth:`NativeStack.flush_counts` adds them to the modules' counters (``realised``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from actlab.sparse._kernels import _act_code, _GatedKernel, _key, _LinearKernel, _load
from actlab.sparse._modules import SparseGatedMLP, SparseLinear
from actlab.sparse._orthogonal import _rotate_hook

__all__ = ["PHASES", "NativeStack", "build_native"]

# what the step's timers measure (csrc/decode_step.cpp, Phase)
PHASES = ("rotation", "norms+residual", "q|k|v", "attention", "o", "mlp")

_QKV, _O, _GATEUP, _DOWN = 0, 1, 2, 3


class _Unsupported(Exception):
    """Why a model cannot run the native step (a plain sentence)."""


class NativeStack:
    """A built ``DecodeStack`` and the modules behind each of its counters."""

    def __init__(self, stack: Any, counted: list[list[nn.Module]]) -> None:
        self.stack = stack
        self.counted = counted

    def step(self, h: torch.Tensor, pos: int) -> torch.Tensor:
        """The residual stream ``[d]`` after every block, for the embedding ``h`` at ``pos``."""
        out: torch.Tensor = self.stack.step(h, pos)
        return out

    def timing(self, on: bool) -> None:
        """Measure the seconds of each phase of the step (:data:`PHASES`) from now on (or not)."""
        self.stack.reset_timings()
        self.stack.set_timing(on)

    def phase_seconds(self) -> dict[str, float]:
        """Seconds per phase since :meth:`timing` was turned on (all steps, all blocks)."""
        return dict(zip(PHASES, self.stack.timings().tolist()))

    def flush_counts(self) -> None:
        """Add the entries seen / dropped since the last flush to the sparse modules' counts."""
        counts = self.stack.counts().tolist()
        self.stack.reset_counts()
        for (seen, dropped), mods in zip(counts, self.counted):
            for m in mods:
                if getattr(m, "counting", False):
                    m.seen += seen
                    m.zeroed += dropped


def _threshold(m: SparseLinear | SparseGatedMLP) -> tuple[float, torch.Tensor | None]:
    t = m.threshold
    if isinstance(t, torch.Tensor):
        return 0.0, t.detach().float().contiguous()
    return (-float("inf") if t < 0 else float(t)), None


def _dense_weight(m: nn.Linear, path: str) -> torch.Tensor:
    w = m.weight.detach()
    if w.device.type != "cpu" or w.dtype != torch.float32:
        raise _Unsupported(f"{path} has {w.dtype} weights on {w.device.type} (float32 CPU needed)")
    return w.contiguous()


def _site(stack: Any, layer: int, site: int, mods: list[tuple[str, Any]]) -> list[list[nn.Module]]:
    """Add the members of one site (modules in output order); their counted modules."""
    counted: list[list[nn.Module]] = []
    off = 0
    done: set[int] = set()
    for i, (path, m) in enumerate(mods):
        if id(m) in done:
            continue
        if type(m) is nn.Linear:
            b = None if m.bias is None else m.bias.detach().float().contiguous()
            stack.add_proj(layer, site, _dense_weight(m, path), False, b, -float("inf"), None, off)
            counted.append([])
            off += m.out_features
            continue
        k = getattr(m, "_kernel", None)
        if type(m) is not SparseLinear or not isinstance(k, _LinearKernel) or not k.fused:
            why = "not on the kernel path (call use_kernels)" if type(m) is SparseLinear else ""
            raise _Unsupported(f"{path} is a {type(m).__name__} {why}".strip())
        pk = k.packed
        names = [id(x) for _, x in mods[i : i + len(pk.members)]]
        if names != [id(x) for x in pk.members]:
            raise _Unsupported(f"{path} is packed with modules out of the site's order")
        pk.refresh()
        t, thr = _threshold(m)
        stack.add_proj(layer, site, pk.wt, True, pk.bias, t, thr, off)
        counted.append(list(pk.members))
        done.update(id(x) for x in pk.members)
        off += sum(x.out_features for x in pk.members)
    return counted


def _norm_weight(norm: Any, path: str, gemma: bool, eps: float) -> torch.Tensor:
    name = type(norm).__name__
    w = getattr(norm, "weight", None)
    if not name.endswith("RMSNorm") or not isinstance(w, torch.Tensor):
        raise _Unsupported(f"{path} is a {name}, not an RMSNorm with a weight")
    e = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    if e != eps:
        raise _Unsupported(f"{path} has eps {e!r}, layer 0 has {eps!r} (one eps per stack)")
    w = w.detach().float()
    return (1.0 + w if gemma else w).contiguous()


def _check_hooks(layer: nn.Module, path: str) -> None:
    for name, sub in layer.named_modules():
        pre = list(sub._forward_pre_hooks.values())
        if sub is layer:
            pre = [h for h in pre if h is not _rotate_hook]
        if pre or sub._forward_hooks:
            where = f"{path}.{name}" if name else path
            raise _Unsupported(f"{where} has forward hooks (the native step would skip them)")


def _mlp(stack: Any, i: int, mlp: Any, path: str, act: int) -> list[list[nn.Module]]:
    if isinstance(mlp, SparseGatedMLP):
        k = getattr(mlp, "_kernel", None)
        if not isinstance(k, _GatedKernel):
            raise _Unsupported(f"{path}.mlp is a SparseGatedMLP not on the kernel path")
        g, u, d = k.linears(mlp)
        if _key(g.weight, u.weight, d.weight, g.bias, u.bias, d.bias) != k.key:
            k.pack(mlp)
        t, thr = _threshold(mlp)
        stack.set_gated(i, k.gate_t, k.updown, *k.biases, t, thr, k.act)
        return [[mlp]]
    parts: list[Any] = [
        getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj", "act_fn")
    ]
    if not type(mlp).__name__.endswith("MLP") or any(p is None for p in parts):
        raise _Unsupported(f"{path}.mlp is a {type(mlp).__name__}, not a gated MLP")
    if _act_code(parts[3]) != act:
        raise _Unsupported(f"{path}.mlp.act_fn is not layer 0's silu / gelu_tanh")
    gu = [(f"{path}.mlp.gate_proj", parts[0]), (f"{path}.mlp.up_proj", parts[1])]
    return _site(stack, i, _GATEUP, gu) + _site(
        stack, i, _DOWN, [(f"{path}.mlp.down_proj", parts[2])]
    )


def _build(dec: Any) -> NativeStack:
    if dec.device.type != "cpu" or dec.dtype != torch.float32:
        raise _Unsupported(f"the model is {dec.dtype} on {dec.device.type} (float32 CPU needed)")
    lib, reason = _load()
    if lib is None:
        raise _Unsupported(f"kernels unavailable ({reason})")
    layers = dec.layers
    attn0, mlp0, norm0 = layers[0].self_attn, layers[0].mlp, layers[0].input_layernorm
    gate0 = getattr(mlp0, "gate_proj", None)
    if not isinstance(gate0, nn.Linear):
        raise _Unsupported(f"model.layers.0.mlp is a {type(mlp0).__name__}, not a gated MLP")
    ff = int(gate0.out_features)
    d = int(dec.inner.embed_tokens.weight.shape[1])
    scale = float(attn0.scaling)
    eps = getattr(norm0, "variance_epsilon", getattr(norm0, "eps", None))
    if not isinstance(eps, float):
        raise _Unsupported("model.layers.0.input_layernorm has no float eps")
    act_fn: Any = getattr(mlp0, "act_fn", None)
    act = 0 if isinstance(mlp0, SparseGatedMLP) else _act_code(act_fn)
    if act is None:
        raise _Unsupported("model.layers.0.mlp.act_fn is neither silu nor gelu_tanh")
    stack = torch.classes.actlab_sparse.DecodeStack(
        d, dec.n_heads, dec.n_kv, dec.head_dim, ff, eps, scale, act, dec.gemma, dec.k, dec.v
    )
    counted: list[list[nn.Module]] = []
    for i, layer in enumerate(layers):
        path = f"model.layers.{i}"
        _check_hooks(layer, path)
        a = layer.self_attn
        gate = getattr(layer.mlp, "gate_proj", None)
        if float(a.scaling) != scale or getattr(gate, "out_features", None) != ff:
            raise _Unsupported(f"{path} differs from layer 0 in attention scaling or MLP width")
        norms = ["input_layernorm", "post_attention_layernorm"]
        if dec.gemma:
            norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
        g = {n: _norm_weight(getattr(layer, n), f"{path}.{n}", dec.gemma, eps) for n in norms}
        qn = kn = None
        if dec.gemma:
            qn = _norm_weight(a.q_norm, f"{path}.self_attn.q_norm", True, eps)
            kn = _norm_weight(a.k_norm, f"{path}.self_attn.k_norm", True, eps)
        rot = getattr(layer, "wina_rotation", None)
        rot_t = None if rot is None else rot.detach().float().t().contiguous()  # R^T [d, d]
        cos, sin = dec.rope[dec.types[i]]  # [max_len, hd]
        if cos.shape[-1] != dec.head_dim:
            raise _Unsupported("partial rotary embeddings are not supported")
        if dec.gemma:
            g1, g2 = g["input_layernorm"], g["pre_feedforward_layernorm"]
            pa, pf = g["post_attention_layernorm"], g["post_feedforward_layernorm"]
        else:
            g1, g2, pa, pf = g["input_layernorm"], g["post_attention_layernorm"], None, None
        stack.add_layer(
            g1,
            g2,
            qn,
            kn,
            pa,
            pf,
            rot_t,
            cos.float().contiguous(),
            sin.float().contiguous(),
            dec.windows[i],
        )
        qkv = [(f"{path}.self_attn.{n}_proj", getattr(a, f"{n}_proj")) for n in "qkv"]
        counted += _site(stack, i, _QKV, qkv)
        counted += _site(stack, i, _O, [(f"{path}.self_attn.o_proj", a.o_proj)])
        counted += _mlp(stack, i, layer.mlp, path, act)
    stack.finish()
    return NativeStack(stack, counted)


def build_native(dec: Any) -> tuple[NativeStack | None, str]:
    """The native step for a :class:`LeanDecoder`'s model, or None and why it cannot run."""
    try:
        return _build(dec), ""
    except _Unsupported as e:
        return None, str(e)
