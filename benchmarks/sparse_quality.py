"""Quality of activation sparsity on a real model: perplexity and agreement vs sparsity.

    .venv/bin/python benchmarks/sparse_quality.py --model smollm2 \\
        --methods teal,cats,chess,wina --sparsities 0,.25,.4,.5,.65,.8 --protocol decode \\
        [--calib-tokens 2048] [--eval-tokens 4096] [--window 256] [--prefill 128] \\
        [--set teal.allocation=greedy] [--threads 1] [--json rows.json] [--report page.html]

A method entry ``LABEL=METHOD`` runs a variant under its own label, its parameters set with
``--set LABEL.KEY=VALUE``: ``--methods teal,teal-pca=teal --set 'teal-pca.rotation="pca"'``.
``--set LABEL.tune_steps=N`` (and ``tune_lr``, ``tune_batch``, ``tune_seed``; ``tune_rows=true``
adds the output-row scales, ``tune_rank=R`` rank-R weight corrections) tunes the
normalisation gains of that label's points after calibration (``actlab.sparse.tune_gains``),
on ``--tune-tokens`` tokens of the calibration text (default: the calibration windows).

For every (method, target sparsity) the method is calibrated once on ``--calib-tokens``
tokens of the Shakespeare comedies (``--calib-source mixed``: the comedies interleaved with
8 KJV books that are not held out) and evaluated on ``--eval-tokens`` held-out tokens (the
tragedies and six KJV books; see ``actlab.sparse._text``) under ``--protocol`` (``decode``:
dense prefill of the first ``--prefill`` tokens of each window, then token-by-token sparse
decoding with the KV cache). Prints a markdown table: target, realised sparsity over block
parameters, perplexity, its change against the dense model, greedy next-token agreement with
the dense model, and the calibration / evaluation seconds of each point, then the facts
(model, protocol, token counts, documents, threads). The LM head and embeddings stay dense
and are not counted in the sparsity.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any


def _parse_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        method, dot, name = key.partition(".")
        if not eq or not dot:
            sys.exit(f"--set {item!r}: use METHOD.KEY=VALUE, e.g. teal.allocation=greedy")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        out.setdefault(method, {})[name] = value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="smollm2, gemma3 or an HF folder")
    ap.add_argument("--methods", default="teal,cats,chess,wina")
    ap.add_argument("--sparsities", default="0,.25,.4,.5,.65,.8")
    ap.add_argument("--protocol", default="decode", choices=("decode", "all", "last-half"))
    ap.add_argument("--calib-tokens", type=int, default=2048)
    ap.add_argument(
        "--calib-source",
        default="comedies",
        choices=("comedies", "mixed"),
        help="calibration and tuning text: the comedies, or the comedies and 8 KJV books that "
        "are not held out",
    )
    ap.add_argument(
        "--tune-tokens",
        type=int,
        default=None,
        help="windows of the comedies that --set LABEL.tune_steps=N tunes on (default: the "
        "calibration windows; more: the same round robin, the calibration windows first)",
    )
    ap.add_argument("--eval-tokens", type=int, default=4096)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--prefill", type=int, default=None, help="default window // 2")
    ap.add_argument("--batch", type=int, default=64, help="windows decoded side by side")
    ap.add_argument("--set", action="append", default=[], dest="sets", metavar="M.KEY=VALUE")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    ap.add_argument("--json", default=None, help="also write the rows and facts here")
    ap.add_argument("--report", default=None, help="also write the HTML report here")
    args = ap.parse_args()

    import torch

    from actlab.sparse import (
        calibration_windows,
        curves_table,
        heldout_windows,
        load_causal_lm,
        sparsity_curves,
    )

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, tok = load_causal_lm(args.model, device=args.device, dtype=getattr(torch, args.dtype))
    load_s = time.perf_counter() - t0
    calib = calibration_windows(
        tok, tokens=args.calib_tokens, window=args.window, source=args.calib_source
    )
    held = heldout_windows(tok, tokens=args.eval_tokens, window=args.window)
    tune = None
    if args.tune_tokens is not None:
        tune = calibration_windows(
            tok, tokens=args.tune_tokens, window=args.window, source=args.calib_source
        ).batches()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    sparsities = [float(s) for s in args.sparsities.split(",") if s.strip()]
    t0 = time.perf_counter()
    rows = sparsity_curves(
        model,
        calib.batches(),
        held.ids,
        methods=methods,
        sparsities=sparsities,
        params=_parse_sets(args.sets),
        protocol=args.protocol,
        prefill=args.prefill,
        batch_size=args.batch,
        tune_calibration=tune,
    )
    total_s = time.perf_counter() - t0
    name = Path(args.model).name
    for r in rows:
        r["model"] = name
    d = rows[0]
    facts = {
        "model": f"{name} ({args.dtype}, {args.device}, {args.threads} thread(s), loaded in "
        f"{load_s:.1f} s)",
        "protocol": f"{args.protocol}; prefill {d['prefill']} of {d['window']}-token windows; "
        f"positions {d['prefill']}..{d['window'] - 2} scored",
        "calibration": f"{calib.tokens} tokens of {', '.join(calib.documents)}"
        + (f"; tuning windows from {args.tune_tokens} tokens of them" if tune else ""),
        "evaluation": f"{d['eval_tokens']} tokens ({d['eval_windows']} windows), "
        f"{d['scored']} scored predictions; {', '.join(held.documents)}",
        "dense perplexity": f"{d['ppl']:.4f}",
        "wall time": f"{total_s:.1f} s for {len(rows)} points",
        "machine": f"{platform.machine()}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs visible",
        "note": "sparsity over the 7 block projections, parameter-weighted; LM head and "
        "embeddings dense (not counted)",
    }
    print(curves_table(rows))
    print()
    for k, v in facts.items():
        print(f"- {k}: {v}")
    if args.json:
        Path(args.json).write_text(json.dumps({"facts": facts, "rows": rows}, indent=1))
    if args.report:
        from actlab.report import write_sparsify_report

        write_sparsify_report(
            args.report, rows, title=f"activation sparsity: {name}", facts=list(facts.items())
        )


if __name__ == "__main__":
    main()
