"""End-to-end greedy decoding tokens/s, dense vs sparse (fused kernels), with quality, one run.

For SmolLM2-135M (and Gemma-3-270M with ``--model gemma3`` or ``all``): a 64-token held-out
prompt, 128 greedy tokens, batch 1, through ``model.generate`` and through actlab's lean
decode loop (:class:`actlab.sparse.LeanDecoder`: static KV cache, minimal Python). Variants,
all sharing the dense model's parameters (interleaved in rounds, medians reported):

- ``dense``            the float32 model as loaded (torch / MKL matvecs) through the lean
  loop's module path: the baseline;
- ``dense-native``     the same model through the lean loop's native step (every block in one
  C++ call, dense projections through torch's mv on the same weights): the best dense figure;
- ``teal40``/``teal50`` TEAL at 40 / 50% on all 7 projections (calibrated on 512 tokens of
  the comedies, exact quantiles), prefill dense / decode sparse, float32 fused kernels;
- ``teal40-bf16``      the same with bfloat16 packed weights (lm_head stays float32 torch);
- ``teal40-bf16-head`` and the lm_head through the dense bf16 kernel too (all weights bf16:
  ``use_kernels(..., head=True)``, the head stays a plain, still tied ``nn.Linear``);
- ``cats40``           CATS at 40% (MLP only, the gated-FFN kernel; attention dense torch).

Every sparse variant runs the lean loop's native step (``LeanDecoder(native=None)``; its
path is printed). Reported per variant: decode tokens/s (128 tokens, prefill excluded;
``x dense`` over the dense module path, ``x d-nat`` over dense-native), ``generate`` tokens/s
(``t(128 tokens) - t(1 token)``) of Hugging Face's plain ``generate`` and of ``generate``
routed through the native step (:func:`actlab.sparse.native_generate`, which ``use_kernels``
installs; ``dense-native``: the dense model routed), both ``x dense`` over plain ``generate``
on the dense model (what a user compares against), the next-token agreement with the
dense greedy continuation of the same run (teacher-forced: the sparse model's argmax at each
dense position), and perplexity / agreement on held-out windows under the decode protocol
(:func:`actlab.sparse.evaluate`). Then a ``torch.profiler`` breakdown of the lean loop per
token (sparse kernels, dense linears split into projections and lm_head, attention, other
ops, and the rest: Python and dispatch; for the native step its own per-phase timers:
rotation, norms, q|k|v, attention, o, MLP), and the llama.cpp anchor (``llama-cpp-python``,
``benchmarks/_llamacpp.py``: F32 / F16 / BF16 GGUF exports of the same dense weights and the
shipped quantised file, with greedy-token agreement) when that package is installed.

    python benchmarks/bench_decode.py        # SmolLM2, 1 thread, ~15 min on 2 busy cores
    python benchmarks/bench_decode.py --model all --threads 2
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from actlab.models import gemma3_gguf_path, load_gemma3, load_smollm2
from actlab.models.pretrained import smollm2_gguf_path
from actlab.sparse import (
    LeanDecoder,
    calibration_windows,
    evaluate,
    generate_routing,
    heldout_windows,
    make_method,
    use_kernels,
)

PROMPT, NEW = 64, 128


def say(msg: str) -> None:
    print(msg, flush=True)


def shared_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s modules that shares its parameters and buffers (no weight copy)."""
    memo: dict[int, Any] = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo)


def build_variants(dense: nn.Module, calib: torch.Tensor, names: list[str]) -> dict[str, nn.Module]:
    out: dict[str, nn.Module] = {"dense": dense, "dense-native": dense}
    states: dict[tuple[str, float], Any] = {}
    for name in names:
        method, rest = ("cats", name[4:]) if name.startswith("cats") else ("teal", name[4:])
        s = int(rest.split("-")[0]) / 100
        if (method, s) not in states:
            t0 = time.perf_counter()
            states[method, s] = make_method(method, sparsity=s).calibrate(dense, [calib])
            say(f"  calibrated {method} {s:.0%} in {time.perf_counter() - t0:.0f} s")
        m = shared_copy(dense)
        report = make_method(method, sparsity=s).apply(m, states[method, s])
        report.set_mode("decode")  # prefill dense, decode sparse: what real decoding does
        dtype = torch.bfloat16 if "-bf16" in name else torch.float32
        kr = use_kernels(m, dtype, head=name.endswith("-head"))  # -head: lm_head packed too
        for sub in m.modules():
            if hasattr(sub, "counting"):
                sub.counting = False  # no per-call counter reads while timing
        say(f"  {name}: {kr}".splitlines()[0])
        out[name] = m
    return out


def native_of(name: str) -> bool | None:
    """The lean loop's path for a variant: module path for ``dense``, native step otherwise."""
    return False if name == "dense" else True if name == "dense-native" else None


def time_lean(
    model: nn.Module, prompt: torch.Tensor, native: bool | None = None
) -> tuple[float, list[int]]:
    """Seconds of the NEW decode steps (prefill excluded) and the greedy tokens."""
    dec = LeanDecoder(model, PROMPT + NEW + 1, native=native)
    logits = dec.forward(prompt, 0)
    toks = [int(logits.argmax())]
    t0 = time.perf_counter()
    for p in range(PROMPT, PROMPT + NEW - 1):
        logits = dec.forward(torch.tensor([[toks[-1]]]), p)
        toks.append(int(logits.argmax()))
    return (time.perf_counter() - t0) / (NEW - 1), toks


def time_generate(model: Any, prompt: torch.Tensor, new: int, native: bool) -> float:
    """Seconds of ``model.generate`` of ``new`` greedy tokens: Hugging Face's plain generate
    (``native=False``) or routed through the native decode step (``True``; checked)."""
    with generate_routing(model, native):
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(
                prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0
            )
        took = time.perf_counter() - t0
        why = getattr(model, "actlab_generate_reason", "")
    if native and why:
        raise SystemExit(f"generate did not run the native step: {why}")
    return took


def teacher_forced(model: nn.Module, prompt: torch.Tensor, dense_toks: list[int]) -> float:
    """Fraction of positions where ``model``'s argmax equals the dense greedy token, fed the
    dense continuation (so one early difference does not decide the rest)."""
    dec = LeanDecoder(model, PROMPT + NEW + 1)
    same = int(int(dec.forward(prompt, 0).argmax()) == dense_toks[0])
    for i in range(1, len(dense_toks)):
        logits = dec.forward(torch.tensor([[dense_toks[i - 1]]]), PROMPT + i - 1)
        same += int(int(logits.argmax()) == dense_toks[i])
    return same / len(dense_toks)


def profile_lean(
    model: nn.Module, prompt: torch.Tensor, vocab: int, native: bool | None, steps: int = 16
) -> str:
    """Per-token milliseconds of the lean loop by category, from torch.profiler (and the native
    step's own timers: the torch ops it calls run inside its phases)."""
    from torch.profiler import ProfilerActivity, profile

    dec = LeanDecoder(model, PROMPT + steps + 1, native=native)
    dec.forward(prompt, 0)
    if dec.native is not None:
        dec.native.timing(True)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        t0 = time.perf_counter()
        for p in range(PROMPT, PROMPT + steps):
            dec.forward(torch.tensor([[1]]), p)
        wall = time.perf_counter() - t0
    cats = {"sparse kernels": 0.0, "dense proj": 0.0, "lm_head": 0.0, "attention": 0.0}
    other = 0.0
    for e in prof.events():
        if e.cpu_parent is not None:
            continue  # count each top-level op once, with its children
        us = e.cpu_time_total
        shapes = e.input_shapes or []
        head = any(len(s) == 2 and vocab in s for s in shapes)
        if dec.native is not None and e.name in ("aten::mv", "aten::addmv"):
            continue  # inside the native step: counted in its phases
        if e.name.startswith("actlab_sparse::"):
            cats["lm_head" if head else "sparse kernels"] += us
        elif e.name in ("aten::linear", "aten::addmm", "aten::mm", "aten::matmul"):
            cats["lm_head" if head else "dense proj"] += us
        elif "scaled_dot_product" in e.name:
            cats["attention"] += us
        else:
            other += us
    cats["other ops"] = other
    if dec.native is not None:
        for phase, sec in dec.native.phase_seconds().items():
            if phase != "rotation" or sec > 0:
                cats[f"step:{phase}"] = sec * 1e6
        dec.native.timing(False)
    per_tok = {k: v / 1e3 / steps for k, v in cats.items()}
    wall_ms = wall * 1e3 / steps
    per_tok["python+dispatch"] = wall_ms - sum(per_tok.values())
    return f"{wall_ms:6.1f} ms/token (profiled) = " + ", ".join(
        f"{k} {v:.1f} ({100 * v / wall_ms:.0f}%)" for k, v in per_tok.items()
    )


def bench_model(name: str, loader: Callable[..., Any], gguf: Callable[[], Any], args: Any) -> None:
    say(f"\n=== {name}: loading")
    dense, tok = loader()
    dense.eval()
    vocab = int(dense.config.vocab_size)
    calib = calibration_windows(tok, tokens=512, window=128).ids  # [4, 128]
    held = heldout_windows(tok, tokens=args.eval_tokens, window=128).ids  # [n, 128]
    prompt = heldout_windows(tok, tokens=PROMPT * 4, window=PROMPT).ids[1:2]  # [1, 64]
    names = args.variants.split(",")
    if name == "gemma3":
        names = [n for n in names if not n.startswith("cats")]  # same paths as on SmolLM2
    variants = build_variants(dense, calib, names)
    torch.set_num_threads(args.threads)

    say(f"=== {name}: timing ({args.rounds} interleaved rounds, {args.threads} thread(s))")
    lean: dict[str, list[float]] = {k: [] for k in variants}
    gen: dict[str, list[float]] = {k: [] for k in variants}  # HF's plain generate
    gen_n: dict[str, list[float]] = {k: [] for k in variants}  # generate, native step
    toks: dict[str, list[int]] = {}
    with torch.no_grad():
        for _ in range(args.rounds):
            for k, m in variants.items():
                s, toks[k] = time_lean(m, prompt, native_of(k))
                lean[k].append(s)
                if args.no_generate:
                    continue
                for native, out in ((False, gen), (True, gen_n)):
                    if k == ("dense-native" if native is False else "dense"):
                        continue  # dense: plain generate; dense-native: routed generate
                    t_all = time_generate(m, prompt, NEW, native)
                    t_one = time_generate(m, prompt, 1, native)
                    out[k].append((t_all - t_one) / (NEW - 1))
    nan = float("nan")
    base_l = statistics.median(lean["dense"])
    base_n = statistics.median(lean["dense-native"])
    base_g = statistics.median(gen["dense"]) if gen["dense"] else nan
    say(
        f"{'variant':18s} {'lean tok/s':>10s} {'x dense':>7s} {'x d-nat':>7s} | "
        f"{'generate tok/s':>14s} {'x dense':>7s} | {'gen native tok/s':>16s} {'x dense':>7s} | "
        f"{'same tokens':>11s} {'teacher-forced':>14s}"
    )
    for k in variants:
        sl = statistics.median(lean[k])
        sg = statistics.median(gen[k]) if gen[k] else nan
        sn = statistics.median(gen_n[k]) if gen_n[k] else nan
        same = sum(a == b for a, b in zip(toks[k], toks["dense"]))
        tf = 1.0 if k.startswith("dense") else teacher_forced(variants[k], prompt, toks["dense"])
        say(
            f"{k:18s} {1 / sl:10.1f} {base_l / sl:7.2f} {base_n / sl:7.2f} | {1 / sg:14.1f} "
            f"{base_g / sg:7.2f} | {1 / sn:16.1f} {base_g / sn:7.2f} | "
            f"{same:5d}/{len(toks[k]):<5d} {tf:14.3f}"
        )

    say(f"=== {name}: quality on held-out windows ({held.shape[0]} x 128, decode protocol)")
    ref = evaluate(dense, held, protocol="decode", batch_size=held.shape[0])
    say(f"{'dense':18s} ppl {ref.ppl:8.3f}")
    for k, m in variants.items():
        if k.startswith("dense"):
            continue
        for sub in m.modules():
            if hasattr(sub, "counting"):
                sub.counting = True
        r = evaluate(m, held, protocol="decode", reference=ref, batch_size=held.shape[0])
        say(
            f"{k:18s} ppl {r.ppl:8.3f} ({100 * (r.ppl / ref.ppl - 1):+.1f}%), agreement "
            f"{r.agreement:.3f}, realised sparsity {r.realised:.3f}"
        )

    say(f"=== {name}: where the time goes (lean loop, torch.profiler, 16 decode steps)")
    for k, m in variants.items():
        path = LeanDecoder(m, 2, native=native_of(k)).native_reason or "native step"
        say(f"{k:18s} lean loop path: {path}")
        say(f"{k:18s} {profile_lean(m, prompt, vocab, native_of(k))}")

    say(f"=== {name}: llama.cpp anchor ({args.threads} thread(s))")
    from _llamacpp import llamacpp_rows  # F32/F16/BF16 exports of `dense` + the shipped Q4 file

    for line in llamacpp_rows(dense, gguf(), prompt[0].tolist(), toks["dense"], args.threads):
        say(line)
    say(
        f"actlab best        {max(1 / statistics.median(v) for v in lean.values()):6.1f} tok/s "
        "decode (lean loop, float32 weights: compare llama.cpp f32, the same weights; the Q4 "
        "file reads ~6-7x fewer weight bytes per token)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("smollm2", "gemma3", "all"), default="smollm2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds (median)")
    ap.add_argument(
        "--variants",
        default="teal40,teal50,teal40-bf16,teal40-bf16-head,cats40",
        help="comma-separated: tealNN[-bf16[-head]], catsNN",
    )
    ap.add_argument("--eval-tokens", type=int, default=1024, help="held-out tokens for ppl")
    ap.add_argument("--no-generate", action="store_true", help="time the lean loop only")
    args = ap.parse_args()
    if args.threads < 1 or args.rounds < 1 or args.eval_tokens < 256:
        ap.error("--threads and --rounds must be >= 1, --eval-tokens >= 256")
    for v in args.variants.split(","):
        ok = v[:4] in ("teal", "cats") and v[4:6].isdigit() and v[6:] in ("", "-bf16", "-bf16-head")
        if not ok or (v.startswith("cats") and v[6:]):
            ap.error(f"unknown variant {v!r}: use tealNN, tealNN-bf16, tealNN-bf16-head or catsNN")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    say(
        f"bench_decode: torch {torch.__version__}, {args.threads} thread(s), load average "
        f"{os.getloadavg()[0]:.1f} (a shared machine makes these figures noisy)"
    )
    t0 = time.perf_counter()
    if args.model in ("smollm2", "all"):
        bench_model("smollm2", load_smollm2, smollm2_gguf_path, args)
    if args.model in ("gemma3", "all"):
        bench_model("gemma3", load_gemma3, gemma3_gguf_path, args)
    say(f"\n{time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    sys.exit(main())
