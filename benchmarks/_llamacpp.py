"""The llama.cpp anchor: dense greedy decode tokens/s of llama.cpp on the same weights as actlab.

A user who wants fast CPU decoding of a small Llama-family model would reach for llama.cpp,
so actlab's decode speed (dense lean loop, sparse kernels) is stated next to it. llama.cpp
reads GGUF files: :func:`float_gguf` writes the dense model actlab decodes (SmolLM2-135M,
Gemma-3-270M: float32 tensors dequantised from their Q4 GGUF packages) as an F32 GGUF with
:func:`actlab.models.export_gguf`, tokenizer and metadata copied from the shipped file, so both
decode the same float32 weights from the same token ids (F16 / BF16 exports and the original
quantised file are timed too, labelled as such). Files go to ``$ACTLAB_CACHE/gguf/``.

Timing (:func:`time_llamacpp`) is that of ``bench_decode.py``'s lean loop: batch 1, a 64-token
prompt evaluated once (prefill, untimed), then 127 single-token steps, each feeding the
previous greedy token (argmax of the last logits over the full vocabulary, as llama.cpp's
greedy sampler does) - seconds per step, best of ``rounds`` after one untimed warm-up round.
Through ``llama-cpp-python`` (``Llama.eval``: one ``llama_decode`` per token plus a few
Python lines, which it also costs a user).

Install (the ``llamacpp`` extra: a benchmark tool, never a runtime dependency; pip compiles
llama.cpp from the sdist, 16-20 min on 2 busy cores at ``nice 19`` with the lean options below,
so ``scripts/bootstrap.sh`` does not install it)::

    CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \\
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \\
      -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=ON" CMAKE_BUILD_PARALLEL_LEVEL=2 \\
      pip install --no-deps --no-binary llama-cpp-python llama-cpp-python diskcache

On CPUs with AMX (Sapphire Rapids and later, ``AMX_INT8 = 1`` in llama.cpp's system info)
llama.cpp's AMX int8 matmul segfaults on the quantised files (llama.cpp issue 20824; seen
here on both shipped Q4 files; F32/F16/BF16 never take that path): build without AMX by
replacing ``-DGGML_NATIVE=ON`` with ``-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON
-DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX_VNNI=ON -DGGML_AVX512=ON
-DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON`` (the native ISA less AMX).

Run on its own, it times llama.cpp against actlab (dense lean loop and TEAL 40% with the
float32 fused kernels) for SmolLM2 and Gemma-3, 1 and 2 threads, interleaved in one run::

    python benchmarks/_llamacpp.py [--model smollm2|gemma3|all] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROMPT, NEW = 64, 128
DTYPES = ("f32", "f16", "bf16")
_STAMP = 1  # bump when export_gguf's output changes


@dataclass
class LlamaCppTiming:
    """Per-token decode seconds of each timed round and the greedy tokens of the last."""

    label: str
    threads: int
    runs: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)

    @property
    def tok_s(self) -> float:
        return 1.0 / min(self.runs)


def llama_cpp() -> tuple[Any, str]:
    """``(llama_cpp module, "")``, or ``(None, reason)`` when it cannot be imported."""
    try:
        import llama_cpp as mod  # type: ignore[import-not-found]
    except Exception as e:  # noqa: BLE001 -- absent, or its shared library fails to load
        return None, f"llama-cpp-python unavailable ({type(e).__name__}: {e})"
    return mod, ""


def float_gguf(model: Any, reference: Path, dtype: str = "f32") -> Path:
    """``model`` as a ``dtype`` GGUF next to the cache's other GGUF files (written once; rewritten
    when ``reference`` changes). ``reference`` is the GGUF the model was loaded from."""
    from actlab.models import export_gguf
    from actlab.models.pretrained import actlab_cache_dir

    out = actlab_cache_dir() / "gguf" / f"{reference.stem}.{dtype}.gguf"
    stamp = {"format": _STAMP, "source": reference.name, "bytes": reference.stat().st_size}
    side = out.with_name(out.name + ".json")
    try:
        if out.is_file() and json.loads(side.read_text()) == stamp:
            return out
    except (OSError, ValueError):
        pass
    export_gguf(model, out, dtype=dtype, reference=reference)
    side.write_text(json.dumps(stamp))
    return out


class LlamaCppDecoder:
    """A llama.cpp model and context (``threads`` threads); :meth:`decode` is one greedy run."""

    def __init__(self, path: Path, prompt_len: int, threads: int) -> None:
        mod, why = llama_cpp()
        if mod is None:
            raise RuntimeError(why)
        self.mod = mod
        self.llm = mod.Llama(
            model_path=str(path),
            n_ctx=prompt_len + NEW + 8,
            n_batch=prompt_len,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        self.n_vocab = int(self.llm.n_vocab())

    def _argmax(self) -> int:  # logits of the last evaluated token, [n_vocab] float32, no copy
        import numpy as np

        ptr = self.mod.llama_get_logits_ith(self.llm.ctx, -1)
        return int(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).argmax())

    def decode(self, prompt: Sequence[int]) -> tuple[float, list[int]]:
        """Seconds per decode step (prefill excluded) and the ``NEW`` greedy tokens."""
        self.llm.reset()  # the next eval overwrites the KV cache from position 0
        self.llm.eval(list(prompt))
        toks = [self._argmax()]
        t0 = time.perf_counter()
        for _ in range(NEW - 1):
            self.llm.eval([toks[-1]])
            toks.append(self._argmax())
        return (time.perf_counter() - t0) / (NEW - 1), toks

    def close(self) -> None:
        self.llm.close()


def time_llamacpp(
    path: Path, prompt: Sequence[int], threads: int, *, rounds: int = 3, label: str = ""
) -> LlamaCppTiming:
    """Greedy decode of ``NEW`` tokens after ``prompt`` with llama.cpp, best of ``rounds``
    after one untimed warm-up round (page-in, allocations)."""
    dec = LlamaCppDecoder(path, len(prompt), threads)
    out = LlamaCppTiming(label or path.name, threads)
    try:
        dec.decode(prompt)
        for _ in range(max(1, rounds)):
            s, out.tokens = dec.decode(prompt)
            out.runs.append(s)
    finally:
        dec.close()
    return out


def agreement(toks: Sequence[int], ref: Sequence[int]) -> str:
    same = sum(a == b for a, b in zip(toks, ref))
    first = next((i for i, (a, b) in enumerate(zip(toks, ref)) if a != b), None)
    where = "identical" if first is None else f"first difference at token {first}"
    return f"{same}/{len(ref)} same greedy tokens as actlab dense ({where})"


def llamacpp_rows(
    model: Any,
    reference: Path,
    prompt: Sequence[int],
    dense_tokens: Sequence[int],
    threads: int,
    *,
    rounds: int = 3,
    dtypes: Sequence[str] = DTYPES,
) -> list[str]:
    """Lines for ``bench_decode.py``: llama.cpp decode tok/s on ``model``'s weights exported as
    ``dtypes`` GGUF files and on the quantised ``reference``, with token agreement; or a single
    ``"not measured: REASON"`` line when llama.cpp is absent."""
    mod, why = llama_cpp()
    if mod is None:
        return [f"llama.cpp          not measured: {why}"]
    files = [(d, float_gguf(model, reference, d)) for d in dtypes]
    files.append(("quantised", reference))
    rows = []
    for kind, path in files:
        t = time_llamacpp(path, prompt, threads, rounds=rounds, label=kind)
        rows.append(
            f"llama.cpp {kind:9s}{t.tok_s:7.1f} tok/s decode (best of {len(t.runs)}, "
            f"{threads} thread(s), llama-cpp-python {mod.__version__}, {path.name}); "
            f"{agreement(t.tokens, dense_tokens)}"
        )
    return rows


# ---------------------------------------------------------------- side-by-side run
def _actlab_variants(dense: Any, tok: Any) -> dict[str, Callable[[list[int]], Any]]:
    """actlab's timed decoders (lean loop): dense on the module path and on the native step,
    TEAL 40% on the float32 kernels (native step where the model allows it)."""
    import torch

    from actlab.sparse import LeanDecoder, calibration_windows, make_method, use_kernels

    calib = calibration_windows(tok, tokens=512, window=128).ids  # [4, 128]
    teal = make_method("teal", sparsity=0.4)
    state = teal.calibrate(dense, [calib])
    memo = {id(t): t for t in (*dense.parameters(), *dense.buffers())}
    sparse = copy.deepcopy(dense, memo)  # shares the dense weights
    teal.apply(sparse, state).set_mode("decode")  # prefill dense, decode sparse
    use_kernels(sparse, torch.float32)
    for sub in sparse.modules():
        if hasattr(sub, "counting"):
            sub.counting = False

    def lean(model: Any, native: bool | None) -> Callable[[list[int]], tuple[float, list[int]]]:
        def run(prompt: list[int]) -> tuple[float, list[int]]:  # as bench_decode.time_lean
            dec = LeanDecoder(model, PROMPT + NEW + 1, native=native)
            with torch.no_grad():
                toks = [int(dec.forward(torch.tensor([prompt]), 0).argmax())]
                t0 = time.perf_counter()
                for p in range(PROMPT, PROMPT + NEW - 1):
                    toks.append(int(dec.forward(torch.tensor([[toks[-1]]]), p).argmax()))
            return (time.perf_counter() - t0) / (NEW - 1), toks

        return run

    out = {"actlab dense": lean(dense, False)}
    probe = LeanDecoder(dense, 2)
    if probe.native is not None:
        out["actlab dense native"] = lean(dense, True)
    else:
        print(f"actlab native step unavailable: {probe.native_reason}")
    out["actlab teal40"] = lean(sparse, None)
    path = LeanDecoder(sparse, 2).native_reason or "native step"
    print(f"actlab teal40 lean loop path: {path}")
    return out


def _bench(name: str, args: argparse.Namespace) -> None:
    import torch

    from actlab.models import gemma3_gguf_path, load_gemma3, load_smollm2
    from actlab.models.pretrained import smollm2_gguf_path
    from actlab.sparse import heldout_windows

    loader, ref = {
        "smollm2": (load_smollm2, smollm2_gguf_path),
        "gemma3": (load_gemma3, gemma3_gguf_path),
    }[name]
    dense, tok = loader()
    reference = ref()
    prompt = heldout_windows(tok, tokens=PROMPT * 4, window=PROMPT).ids[1].tolist()  # 64 ids
    files = {f"llama.cpp {d}": float_gguf(dense, reference, d) for d in DTYPES}
    files["llama.cpp Q4 (shipped)"] = reference
    print(f"\n{name}: prompt {PROMPT} tokens, {NEW} greedy tokens; shipped file {reference.name}")
    torch.set_num_threads(1)
    actlab = _actlab_variants(dense, tok)
    for threads in args.threads:
        torch.set_num_threads(threads)
        load0 = os.getloadavg()[0]
        decs = {k: LlamaCppDecoder(p, len(prompt), threads) for k, p in files.items()}
        fns: dict[str, Callable[[list[int]], tuple[float, list[int]]]] = {
            **{k: d.decode for k, d in decs.items()},
            **actlab,
        }
        runs: dict[str, list[float]] = {k: [] for k in fns}
        toks: dict[str, list[int]] = {}
        for fn in fns.values():  # warm-up round
            fn(prompt)
        for _ in range(args.rounds):  # interleaved: every decoder once per round
            for k, fn in fns.items():
                s, toks[k] = fn(prompt)
                runs[k].append(s)
        for d in decs.values():
            d.close()
        base = min(runs["actlab dense"])
        print(
            f"\n{name}, {threads} thread(s), best of {args.rounds} interleaved rounds, load "
            f"{load0:.1f} -> {os.getloadavg()[0]:.1f}"
        )
        print(f"{'decoder':24s} {'tok/s':>7s} {'x actlab dense':>14s}  tokens")
        for k, v in runs.items():
            print(
                f"{k:24s} {1 / min(v):7.1f} {base / min(v):14.2f}  "
                f"{agreement(toks[k], toks['actlab dense'])}",
                flush=True,
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("smollm2", "gemma3", "all"), default="all")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (best)")
    args = ap.parse_args()
    if args.rounds < 1 or min(args.threads) < 1:
        ap.error("--rounds and --threads must be >= 1")
    mod, why = llama_cpp()
    if mod is None:
        print(f"not measured: {why}")
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(f"llama-cpp-python {mod.__version__}; {mod.llama_print_system_info().decode().strip()}")
    for name in ("smollm2", "gemma3") if args.model == "all" else (args.model,):
        _bench(name, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
