"""``model.generate`` through the native decode step: :func:`native_generate`.

Hugging Face's ``generate`` runs the model's modules for every decode step (Python and
dispatch per module, a cache object, masks, processors). For the calls that greedy decoding
with a static KV cache serves exactly, the wrapper that :func:`native_generate` installs on
the model instance (and :func:`~actlab.sparse.use_kernels` installs by default) prefills with
the model's own modules and then decodes every position with the native step of
:class:`~actlab.sparse.LeanDecoder` (``csrc/decode_step.cpp``, every block in one C++ call).
It computes what greedy search computes (Hugging Face ``GenerationMixin._sample`` with
``do_sample=False``)::

    x_{t+1} = argmax_v  l_t[v],   l_t[e] = -inf for e in eos while t < min_length
    stop after x_{t+1} in eos (the eos is kept) or when t + 1 = max_length

with ``l_t`` the float32 logits of the last position (Gemma's final soft-capping
``c * tanh(l / c)`` applied, as the model does), ``max_length`` / ``min_length`` resolved by
Hugging Face's own ``_prepare_generation_config`` and ``_prepare_generated_length`` (so
``max_new_tokens``, ``max_length``, ``min_new_tokens``, ``min_length`` and the model's
``generation_config`` mean what they mean there), and returns the same ``LongTensor``
``[1, prompt + generated]``.

Served: batch 1, ``input_ids`` (or ``inputs``) with no ``attention_mask`` or an all-ones one,
greedy decoding with the KV cache, eos / length stopping. Everything else goes to the
original ``generate`` unchanged: sampling, beams, any logits processor or stopping criterion
(passed or configured: repetition penalty, bad words, forced tokens, ...), streamers,
``return_dict_in_generate`` and other outputs, padding, other model kwargs, a model in
training mode, and models the native step cannot run (``LeanDecoder.native_reason``). After
each call ``model.actlab_generate_reason`` is ``""`` (native step) or the reason it fell back
(also logged at debug level on ``actlab.sparse``); ``model.actlab_native_generate = False``
turns the routing off, ``native_generate(model, False)`` removes it.

:func:`time_decode` times greedy decoding through the lean loop or ``generate`` (routed or
plain) for the benchmarks.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from actlab.sparse._decode import LeanDecoder
from actlab.sparse._kernels import _GENERATE_HOOKS
from actlab.sparse._state import SparseError

__all__ = ["DecodeTiming", "generate_routing", "native_generate", "time_decode"]

_log = logging.getLogger("actlab.sparse")

# generation settings the loop implements (checked below) and the ones greedy search ignores
_HANDLED = {
    "max_length",
    "max_new_tokens",
    "min_length",
    "min_new_tokens",
    "do_sample",
    "num_beams",
    "use_cache",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "decoder_start_token_id",
    "transformers_version",
    "_from_model_config",
}
_SAMPLING_ONLY = {  # read by the sampling warpers only (``if generation_config.do_sample``)
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "top_h",
    "typical_p",
    "epsilon_cutoff",
    "eta_cutoff",
}
_MODEL_INPUTS = {"input_ids", "attention_mask"}


def _neutral() -> dict[str, Any]:
    """Every generation setting at the value that adds nothing to greedy search."""
    from transformers import GenerationConfig

    out = dict.fromkeys(GenerationConfig().to_dict())
    defaults = getattr(GenerationConfig, "_get_default_generation_params", None)
    if callable(defaults):
        out.update(defaults())
    return out


def _eos_list(eos: Any) -> list[int]:
    if eos is None:
        return []
    if isinstance(eos, torch.Tensor):
        return [int(e) for e in eos.reshape(-1).tolist()]
    return [int(e) for e in eos] if isinstance(eos, (list, tuple)) else [int(eos)]


class _Plan:
    """A call the loop serves: the prompt ``[1, T]`` and the resolved lengths and eos ids."""

    def __init__(self, ids: torch.Tensor, max_length: int, min_length: int, eos: list[int]):
        self.ids, self.max_length, self.min_length, self.eos = ids, max_length, min_length, eos


def _plan(model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Plan | str:
    """The plan of a ``generate`` call, or why the original ``generate`` must serve it."""
    if not getattr(model, "actlab_native_generate", True):
        return "switched off (model.actlab_native_generate is False)"
    if model.training:
        return "the model is in training mode (dropout): call model.eval()"
    p = next(model.parameters(), None)
    if p is None or p.device.type != "cpu" or p.dtype != torch.float32:
        where = "no parameters" if p is None else f"{p.dtype} on {p.device.type}"
        return f"the native step runs float32 CPU models (this one: {where})"
    plain = type(model).generate
    from transformers import GenerationMixin

    if plain is not GenerationMixin.generate:  # the model's own generate: it may do more
        return f"{type(model).__name__} overrides generate (only GenerationMixin's is served)"
    try:
        bound = inspect.signature(plain).bind(model, *args, **kwargs)
    except TypeError as e:
        return f"arguments the original generate must judge ({e})"
    named = dict(bound.arguments)
    named.pop(next(iter(inspect.signature(plain).parameters)), None)  # self
    extra: dict[str, Any] = dict(named.pop("kwargs", {}))
    inputs = named.pop("inputs", None)
    gen_config = named.pop("generation_config", None)
    for name, value in named.items():
        if value is not None:
            return f"{name} is given (not served by the native step)"
    if inputs is None:
        inputs = extra.get("input_ids")
    elif "input_ids" in extra:
        return "both inputs and input_ids are given"
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 2:
        return "the prompt is not a [batch, T] tensor of input_ids"
    if inputs.shape[0] != 1 or inputs.shape[1] < 1:
        return f"the prompt is {tuple(inputs.shape)}: the native step serves batch 1"
    if inputs.dtype not in (torch.long, torch.int):
        return f"input_ids are {inputs.dtype}, not integer ids"
    if inputs.device != p.device:
        return f"input_ids are on {inputs.device}, the model on {p.device}"
    try:
        cfg, model_kwargs = model._prepare_generation_config(gen_config, **extra)
    except Exception as e:  # noqa: BLE001 -- the original generate raises its own error
        return f"generation settings the original generate must judge ({e})"
    unknown = sorted(set(model_kwargs) - _MODEL_INPUTS)
    if unknown:
        return f"model kwargs {', '.join(unknown)} are not served by the native step"
    mode = cfg.get_generation_mode(None)
    if str(getattr(mode, "value", mode)) != "greedy_search":
        return f"{getattr(mode, 'value', mode)} is not greedy search"
    neutral = _neutral()
    for key, value in cfg.to_dict().items():
        base = neutral.get(key, None)
        if key in _HANDLED or key in _SAMPLING_ONLY or value == base:
            continue
        if (value is None or value is False) and base in (None, False):
            continue  # an unset flag: the same as its default
        return f"generation setting {key}={value!r} is not served by the native step"
    if cfg.use_cache is False:
        return "use_cache=False (the native step decodes with the KV cache)"
    eos = _eos_list(cfg.eos_token_id)
    mask = model_kwargs.get("attention_mask")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.shape != inputs.shape or not bool(mask.all()):
            return "attention_mask is not all ones (padding): not served by the native step"
    else:  # Hugging Face infers a mask from pad tokens in the prompt unless pad is an eos
        pad = cfg.pad_token_id if cfg.pad_token_id is not None else (eos[0] if eos else None)
        if pad is not None and pad not in eos and bool((inputs == int(pad)).any()):
            return f"the prompt holds pad_token_id {pad} and no attention_mask (it would be masked)"
    t = int(inputs.shape[1])
    user_max = extra.get("max_length")
    has_default_max = (
        user_max is None
        and (gen_config is None or gen_config.max_length is None)
        and model.generation_config.max_length is None
    )
    has_default_min = (
        extra.get("min_length") is None
        and (gen_config is None or gen_config.min_length is None)
        and model.generation_config.min_length is None
    )
    try:
        cfg = model._prepare_generated_length(
            cfg, has_default_max, has_default_min, "input_ids", t, inputs
        )
    except Exception as e:  # noqa: BLE001
        return f"lengths the original generate must judge ({e})"
    max_length = cfg.max_length
    min_length = max(int(cfg.min_length or 0), t + int(cfg.min_new_tokens or 0))
    if not isinstance(max_length, int) or max_length <= t:
        return f"max_length {max_length!r} leaves no new token after a {t}-token prompt"
    return _Plan(inputs, max_length, min_length if eos else 0, eos)


@torch.no_grad()
def _decode(model: Any, plan: _Plan) -> torch.Tensor | str:
    """Greedy decoding of ``plan`` through the native step: ``[1, max <= max_length]``."""
    try:
        dec = LeanDecoder(model, plan.max_length)
    except SparseError as e:
        return str(e)
    if dec.native is None:
        return f"the native step cannot run: {dec.native_reason}"
    cap = getattr(model.config, "final_logit_softcapping", None)
    eos = set(plan.eos)
    eos_ids = torch.tensor(plan.eos, dtype=torch.long)
    out = plan.ids[0].tolist()
    tok = plan.ids.to(dec.device)
    start = 0
    while True:
        logits = dec.forward(tok, start)  # [vocab]
        start += tok.shape[-1]
        if cap is not None:  # the model's own soft-capping, in its order of operations
            logits = torch.tanh(logits / cap) * cap
        logits = logits.to(dtype=torch.float32, copy=True)
        if len(out) < plan.min_length:
            logits[eos_ids.to(logits.device)] = -float("inf")
        nxt = int(logits.argmax())
        out.append(nxt)
        if nxt in eos or len(out) >= plan.max_length:
            break
        tok = torch.tensor([[nxt]], device=dec.device)
    dec.flush_counts()
    return torch.tensor([out], dtype=torch.long, device=plan.ids.device)


def _generate(self: Any, *args: Any, **kwargs: Any) -> Any:
    """``generate`` of a model with native routing (see :mod:`actlab.sparse._generate`)."""
    plan = _plan(self, args, kwargs)
    out = _decode(self, plan) if isinstance(plan, _Plan) else plan
    if isinstance(out, torch.Tensor):
        self.actlab_generate_reason = ""
        return out
    self.actlab_generate_reason = out
    _log.debug("actlab: generate falls back to the original generate: %s", out)
    original = self.__dict__.get("_actlab_original_generate")
    if original is not None:
        return original(*args, **kwargs)
    return type(self).generate(self, *args, **kwargs)


def _installed(model: nn.Module) -> bool:
    g = model.__dict__.get("generate")
    return isinstance(g, types.MethodType) and g.__func__ is _generate


def native_generate(model: nn.Module, on: bool = True) -> nn.Module:
    """Route ``model.generate`` calls that greedy decoding serves exactly through the native
    decode step (``on=False``: remove the routing). Returns ``model``.

    The routing is an attribute of this instance (``copy.deepcopy`` keeps it, bound to the
    copy); the model must be a Hugging Face causal LM with ``generate``. After each call,
    ``model.actlab_generate_reason`` is ``""`` or why the original ``generate`` ran;
    ``model.actlab_native_generate = False`` turns the routing off without removing it.
    """
    if not isinstance(model, nn.Module) or not callable(getattr(type(model), "generate", None)):
        raise SparseError(
            f"native_generate needs a Hugging Face causal LM with generate, got "
            f"{type(model).__name__}"
        )
    if not on:
        if _installed(model):
            del model.__dict__["generate"]
            previous = model.__dict__.pop("_actlab_original_generate", None)
            if previous is not None:
                model.__dict__["generate"] = previous
        model.__dict__.pop("actlab_generate_reason", None)
        return model
    if not _installed(model):
        previous = model.__dict__.get("generate")  # another instance-level wrapper: kept
        if previous is not None:
            model.__dict__["_actlab_original_generate"] = previous
        model.__dict__["generate"] = types.MethodType(_generate, model)
    model.__dict__.setdefault("actlab_native_generate", True)
    model.__dict__["actlab_generate_reason"] = ""
    return model


@contextlib.contextmanager
def generate_routing(model: nn.Module, native: bool) -> Iterator[None]:
    """Within the block, ``model.generate`` goes through the native step (``native=True``:
    routing installed and on) or is Hugging Face's plain ``generate`` (``False``: routing off);
    the model's routing is restored afterwards."""
    had = _installed(model)
    was_on = model.__dict__.get("actlab_native_generate", True)
    if native and not had:
        native_generate(model)
    model.__dict__["actlab_native_generate"] = native
    try:
        yield
    finally:
        if had:
            model.__dict__["actlab_native_generate"] = was_on
        elif native:
            native_generate(model, False)
            model.__dict__.pop("actlab_native_generate", None)
        else:
            model.__dict__.pop("actlab_native_generate", None)


def _kernels_hook(model: nn.Module, on: bool) -> None:
    """use_kernels / drop_kernels: route (or stop routing) a Hugging Face model's generate."""
    if callable(getattr(type(model), "generate", None)):
        native_generate(model, on)


_GENERATE_HOOKS.append(_kernels_hook)


def _time_generate(model: Any, ids: torch.Tensor, new: int, native: bool | None) -> torch.Tensor:
    """``model.generate`` of exactly ``new`` greedy tokens (routed as ``native`` says)."""
    dev = next(model.parameters()).device
    routing = generate_routing(model, native) if native is not None else contextlib.nullcontext()
    with routing:
        seq = model.generate(ids.to(dev), max_new_tokens=new, min_new_tokens=new, do_sample=False)
        why = getattr(model, "actlab_generate_reason", "")
    if native and why:
        raise SparseError(f"generate did not run the native step: {why}")
    return seq.cpu()


@dataclass(frozen=True)
class DecodeTiming:
    """Greedy decoding of ``new_tokens`` tokens after a prompt: the tokens and the seconds."""

    tokens: torch.Tensor  # [new_tokens] the generated ids
    seconds: float  # best of the rounds (wall clock)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens.numel() / self.seconds if self.seconds > 0 else float("inf")


@torch.inference_mode()
def time_decode(
    model: nn.Module,
    ids: torch.Tensor,
    new_tokens: int,
    *,
    lean: bool = True,
    rounds: int = 2,
    native: bool | None = None,
    warmup: bool = True,
) -> DecodeTiming:
    """Greedy decoding of ``new_tokens`` after ``ids`` ``[1, T]`` (batch 1), best of ``rounds``:
    through :class:`LeanDecoder` (``lean=True``; ``native``: its native step, see there) or the
    model's ``generate`` (``lean=False``; ``native=True``: routed through the native step,
    :func:`~actlab.sparse.native_generate`, an error if it falls back; ``False``: Hugging
    Face's plain ``generate``; ``None``: as the model is set up), after one untimed warm-up
    round (``warmup=False``: none, e.g. when the caller interleaves rounds of several models).
    The prefill is part of the time, as a user sees it."""
    if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens < 1:
        raise SparseError(f"new_tokens must be a positive int, got {new_tokens!r}")
    best, out = float("inf"), torch.empty(0, dtype=torch.long)
    first = 0 if warmup else 1
    for r in range(first, max(1, rounds) + 1):  # round 0 warms up (allocations, lazy inits)
        t0 = time.perf_counter()
        if lean:
            dec = LeanDecoder(model, ids.shape[1] + new_tokens, native=native)
            seq = dec.generate(ids, new_tokens)
        else:
            seq = _time_generate(model, ids, new_tokens, native)
        if r:
            best = min(best, time.perf_counter() - t0)
        out = seq[0, ids.shape[1] :]
    return DecodeTiming(out, best)
