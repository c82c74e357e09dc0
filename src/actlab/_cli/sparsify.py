"""``actlab sparsify MODEL``: calibrate activation sparsity, save it, measure its quality.

    actlab sparsify smollm2 --method teal --sparsity 0.4 --out smollm2-teal40
    actlab sparsify smollm2 --method chess --sparsity 0.5 --generate "To be, or not to be"
    actlab sparsify smollm2 --method all --eval               # curves of every method
    actlab sparsify ./my-llama --method teal --sparsity 0.5 --set allocation=greedy --eval
    actlab sparsify smollm2 --method teal --sparsity 0.4 --calib-tokens 32768 --tune-steps 120
    actlab sparsify smollm2-teal40 --eval --bench           # a saved model, as it was saved
    actlab sparsify run-seed0 --average run-seed1 --out soup --eval   # average tuned runs

MODEL is ``smollm2``, ``gemma3`` (when this actlab has its loader) or a local Hugging Face
folder. Calibration reads ``--calib-tokens`` tokens of the Shakespeare comedies (``--calib
mixed``: interleaved with 8 KJV books that are not held out; or a ``--calib`` text file);
``--eval`` scores ``--eval-tokens`` tokens of held-out text (the tragedies and six KJV books,
never seen by calibration) in windows of ``--window`` tokens
under ``--protocol`` (``decode``: dense prefill of the first half of each window, then
token-by-token sparse decoding with the KV cache; ``all``; ``last-half``), prints the
perplexity / agreement table and writes an HTML report. ``--out DIR`` saves the model,
tokenizer and thresholds; ``actlab.sparse.load_sparse(DIR)`` reloads them. ``--tune-steps N``
then tunes the normalisation gains of the sparsified model to the dense model's predictions on
the calibration text (:func:`actlab.sparse.tune_gains`: light training, not training-free;
the gains are saved with the thresholds); ``--tune-rows`` also tunes one scale per output row
of every sparsified linear, ``--tune-rank R`` a rank-R correction of each of their weights,
``--tune-weights`` their weights themselves (sparsity-aware fine-tuning by distillation, at
``--tune-weights-lr``), and ``--tune-hidden L`` adds a per-block feature-distillation term to
the KL; all saved with the state and merged into the weights.

MODEL may also be a folder written by ``--out``: then nothing is calibrated or tuned again.
Alone it prints what the folder holds; ``--eval`` (one row against the dense model),
``--bench`` and ``--generate`` use the saved model against the dense model it was sparsified
from (the name or folder the save records; ``--dense MODEL`` to give it, checked against the
saved fingerprint). The flags a save fixes (method, sparsity, --set, calibration, tuning,
--out) are refused there. ``actlab sparsify RUN1 --average RUN2 [RUN3 ...] --out SOUP`` averages
the tuning of saved runs of one calibration (other ``--tune-seed``; a uniform model soup,
:func:`actlab.sparse.average_states`), applies it to their dense model and saves it; ``--eval``,
``--bench`` and ``--generate`` then use the average.

Every flag is checked before the model is loaded; a bad value is one line and exit 2.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

HELP = "sparsify a causal LM's activations (TEAL, CATS, CHESS, WINA): calibrate, save, evaluate"

_DTYPES = ("float32", "bfloat16", "float16")
MAX_TOKENS = 1_000_000
MAX_NEW_TOKENS = 1024


def add_arguments(p: argparse.ArgumentParser) -> None:
    from actlab.sparse import MODES

    p.add_argument(
        "model",
        help="smollm2, gemma3, a local Hugging Face model folder, or a folder written by --out "
        "(then --eval, --bench and --generate use the saved model as it is)",
    )
    p.add_argument(
        "--method",
        default=None,
        help="teal, cats, chess, wina, or all (with --eval: every method); not with a saved model",
    )
    p.add_argument(
        "--dense",
        default=None,
        metavar="MODEL",
        help="with a saved sparsified model: the dense model it was sparsified from (default: "
        "the one its config names), the baseline of --eval, --bench and --generate",
    )
    p.add_argument("--sparsity", type=float, default=None, help="target sparsity in [0, 1)")
    p.add_argument(
        "--sparsities",
        default=None,
        help="with --eval: comma list of targets (default 0,.25,.4,.5,.65,.8, or 0,S)",
    )
    p.add_argument(
        "--calib",
        default="shakespeare",
        metavar="TEXT",
        help="calibration text: 'shakespeare' (the 8 comedies, default), 'mixed' (the comedies "
        "and 8 KJV books that are not held out) or a UTF-8 file",
    )
    p.add_argument(
        "--calib-tokens", type=int, default=2048, help="calibration tokens (default 2048)"
    )
    p.add_argument("--eval", action="store_true", help="perplexity/agreement curves + report")
    p.add_argument(
        "--eval-tokens",
        type=int,
        default=4096,
        help="held-out tokens, in whole windows (default 4096)",
    )
    p.add_argument("--window", type=int, default=256, help="tokens per window (default 256)")
    p.add_argument(
        "--prefill", type=int, default=None, help="dense context per window (default window/2)"
    )
    p.add_argument(
        "--protocol", default="decode", choices=MODES, help="evaluation protocol (default decode)"
    )
    p.add_argument(
        "--no-eval-cache",
        action="store_true",
        help="evaluate the dense model again instead of reading its stored result (--eval keeps "
        "it under $ACTLAB_CACHE/eval, keyed by the weights, windows, protocol, batch and threads)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="KEY=VALUE",
        help="a method parameter, e.g. allocation=greedy (JSON values); with --method all "
        "prefix the method: teal.allocation=greedy; repeatable",
    )
    p.add_argument(
        "--tune-steps",
        type=int,
        default=0,
        help="after calibration, tune the normalisation gains to the dense model's predictions "
        "for N Adam steps on the calibration text (actlab.sparse.tune_gains; trains ~0.03%% "
        "of the weights; default 0: off)",
    )
    p.add_argument("--tune-lr", type=float, default=1e-3, help="tuning learning rate (1e-3)")
    p.add_argument("--tune-batch", type=int, default=4, help="windows per tuning step (4)")
    p.add_argument("--tune-seed", type=int, default=0, help="seed of the tuning windows' draws (0)")
    p.add_argument(
        "--tune-rows",
        action="store_true",
        help="also tune one scale per output row of every sparsified linear (~0.1%% of the "
        "weights more; saved with the state, applied to the weights)",
    )
    p.add_argument(
        "--tune-rank",
        type=int,
        default=0,
        metavar="R",
        help="also tune a rank-R correction W + U V of every sparsified linear's weight (rank 8 "
        "is ~1.8%% of SmolLM2's weights; saved with the state, merged into the weights, so "
        "decoding reads no more bytes; default 0: off)",
    )
    p.add_argument(
        "--tune-weights",
        action="store_true",
        help="also tune the sparsified linears' weights themselves (sparsity-aware fine-tuning "
        "by distillation, ~79%% of SmolLM2's weights; the changes are saved with the state, "
        "as large as those weights, and merged into them)",
    )
    p.add_argument(
        "--tune-weights-lr",
        type=float,
        default=5e-5,
        help="learning rate of --tune-weights (5e-5; the same cosine decay)",
    )
    p.add_argument(
        "--tune-hidden",
        type=float,
        default=0.0,
        metavar="LAMBDA",
        help="also pull every block's output towards the dense model's (a normalised squared "
        "error per block, SquareHead's feature distillation) at this weight next to the KL "
        "(default 0: off; 1.0 weighs them alike)",
    )
    p.add_argument(
        "--tune-tokens",
        type=int,
        default=None,
        help="calibration tokens the tuning draws its windows from (default --calib-tokens; "
        "more gives the gains more text: the thresholds still use the first --calib-tokens)",
    )
    p.add_argument(
        "--average",
        nargs="+",
        default=None,
        metavar="DIR",
        help="with a saved tuned model: average its tuning with these saved runs of the same "
        "calibration (other --tune-seed), a uniform model soup (actlab.sparse.average_states); "
        "--out saves the average, --eval / --bench / --generate use it",
    )
    p.add_argument("--out", default=None, metavar="DIR", help="save the sparsified model here")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out folder")
    p.add_argument(
        "--report",
        default=None,
        metavar="HTML",
        help="report of --eval (default DIR/report.html with --out, else sparsify-MODEL.html)",
    )
    p.add_argument("--generate", default=None, metavar="PROMPT", help="greedy dense vs sparse")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="tokens --generate adds (default 32) and --bench decodes (default 128)",
    )
    p.add_argument(
        "--bench",
        action="store_true",
        help="greedy decoding tokens/s, dense vs sparse (torch path, fused float32 and bf16 "
        "kernels, bf16 with the LM head packed too), batch 1: a 64-token held-out prompt + "
        "--max-new-tokens, through actlab's lean loop (module path and native step) and "
        "generate (Hugging Face's plain generate and generate routed through the native "
        "step); threads: OMP_NUM_THREADS",
    )
    p.add_argument(
        "--batch", type=int, default=64, help="windows decoded side by side (default 64)"
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--dtype", default="float32", choices=_DTYPES, help="model dtype")


# ---------------------------------------------------------------- validation
def _int(flag: str, value: int | None, lo: int, hi: int) -> None:
    if value is not None and not lo <= value <= hi:
        raise ValueError(f"{flag} must be in {lo}..{hi}, got {value}")


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word: allocation=greedy


def _parse_sets(overrides: list[str], methods: list[str], single: bool) -> dict[str, dict]:
    from actlab.sparse import METHODS

    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for item in overrides:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"--set {item!r} is not KEY=VALUE (e.g. --set allocation=greedy)")
        owner, dot, name = key.rpartition(".")
        if not dot:
            if not single:
                raise ValueError(
                    f"--set {key}: with --method all prefix the method, e.g. --set teal.{key}=..."
                )
            owner = methods[0]
        if owner not in out:
            raise ValueError(f"--set {key}: method {owner!r} is not being run ({', '.join(out)})")
        known = [
            n
            for n in inspect.signature(METHODS.get(owner).__init__).parameters
            if n not in ("self", "sparsity")
        ]
        if name == "sparsity":
            raise ValueError("--set sparsity: use --sparsity (or --sparsities with --eval)")
        if name not in known:
            raise ValueError(
                f"unknown --set key {name!r} for {owner}; known: {', '.join(known) or 'none'}"
            )
        out[owner][name] = _value(raw)
    return out


_SOURCES = {"shakespeare": "comedies", "mixed": "mixed"}  # --calib name -> calibration source


def _read_text(name: str) -> str | None:
    if name in _SOURCES:
        return None
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"--calib {name}: no such file (give 'shakespeare', 'mixed' or a UTF-8 text file)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"--calib {path} is not UTF-8 text (byte {e.start})") from None
    if not text.strip():
        raise ValueError(f"--calib {path} holds no text")
    return text


def validate(args: argparse.Namespace) -> None:
    """Check every flag before any work; fill ``methods``, ``targets``, ``params``, paths."""
    from actlab.sparse import (
        DEFAULT_SPARSITIES,
        METHODS,
        TuneConfig,
        check_sparsity,
        make_method,
        resolve_model,
        saved_info,
    )

    args.saved = saved_info(Path(args.model).expanduser())  # None unless a folder from --out
    if args.saved is not None:
        _validate_saved(args, args.saved)
        return
    for flag, value in (("--dense", args.dense), ("--average", args.average)):
        if value is not None:
            raise ValueError(
                f"{flag} applies to a saved sparsified model (MODEL a folder written by --out)"
            )
    if args.method is None:
        raise ValueError("give --method teal|cats|chess|wina (or all, with --eval)")
    if args.method == "all":
        args.methods = list(METHODS.names())
        if not args.eval:
            raise ValueError("--method all compares the methods: add --eval")
        for flag, value in (("--out", args.out), ("--generate", args.generate)):
            if value is not None:
                raise ValueError(f"{flag} needs one method (--method teal|cats|chess|wina)")
    else:
        args.methods = [METHODS.resolve(args.method)]  # unknown names: one line, close matches
    if args.sparsity is not None:
        args.sparsity = check_sparsity(args.sparsity, "--sparsity")
    if args.sparsities is not None:
        if not args.eval:
            raise ValueError("--sparsities applies to --eval")
        parts = [s.strip() for s in args.sparsities.split(",") if s.strip()]
        try:
            values = [float(s) for s in parts]
        except ValueError:
            raise ValueError(
                f"--sparsities {args.sparsities!r}: give numbers such as 0,.25,.5"
            ) from None
        if not values:
            raise ValueError("--sparsities lists no value; e.g. --sparsities 0,.25,.5")
        args.targets = sorted({check_sparsity(v, "--sparsities") for v in values} | {0.0})
    elif args.eval:
        args.targets = (
            list(DEFAULT_SPARSITIES) if args.sparsity is None else sorted({0.0, args.sparsity})
        )
    else:
        args.targets = []
    if args.bench and args.method == "all":
        raise ValueError("--bench needs one method (--method teal|cats|chess|wina)")
    needs_one = args.out is not None or args.generate is not None or args.bench or not args.eval
    if needs_one and args.sparsity is None:
        raise ValueError("give --sparsity S (a number in [0, 1), e.g. 0.4)")
    args.params = _parse_sets(args.overrides, args.methods, args.method != "all")
    for m in args.methods:  # parameter values checked now (one-line SparseError)
        make_method(m, sparsity=args.sparsity or 0.0, **args.params[m])
    _int("--tune-steps", args.tune_steps, 0, 1_000_000)
    args.tune = None
    _int("--tune-rank", args.tune_rank, 0, 4096)
    if args.tune_steps:
        args.tune = TuneConfig(
            steps=args.tune_steps,
            lr=args.tune_lr,
            batch=args.tune_batch,
            seed=args.tune_seed,
            rows=args.tune_rows,
            rank=args.tune_rank,
            weights=args.tune_weights,
            weights_lr=args.tune_weights_lr,
            hidden=args.tune_hidden,
        )
    elif (
        args.tune_lr != 1e-3
        or args.tune_batch != 4
        or args.tune_seed != 0
        or args.tune_tokens
        or args.tune_rows
        or args.tune_rank
        or args.tune_weights
        or args.tune_weights_lr != 5e-5
        or args.tune_hidden
    ):
        raise ValueError(
            "--tune-lr, --tune-batch, --tune-seed, --tune-tokens, --tune-rows, --tune-rank, "
            "--tune-weights, --tune-weights-lr and --tune-hidden need --tune-steps N"
        )
    _int("--tune-tokens", args.tune_tokens, 1, MAX_TOKENS)
    args.model_key = resolve_model(args.model)
    args.calib_text = _read_text(args.calib)
    args.calib_source = _SOURCES.get(args.calib, "comedies")
    _int("--calib-tokens", args.calib_tokens, 1, MAX_TOKENS)
    _check_use_flags(args)
    if args.out is not None:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} exists and is not a folder")
        if out.is_dir() and any(out.iterdir()) and not args.force:
            raise ValueError(f"--out {out} exists and is not empty; pass --force to write into it")
    args.name = Path(args.model_key).name  # smollm2, gemma3 or the folder's name
    _check_report(args, Path(args.out) / "report.html" if args.out else None)


def _check_use_flags(args: argparse.Namespace) -> None:
    """The flags of --eval, --bench and --generate (both modes)."""
    from actlab._cli.compare import check_device

    _int("--eval-tokens", args.eval_tokens, 1, MAX_TOKENS)
    _int("--window", args.window, 8, 1 << 20)
    _int("--batch", args.batch, 1, 4096)
    _int("--max-new-tokens", args.max_new_tokens, 1, MAX_NEW_TOKENS)
    args.bench_new_tokens = args.max_new_tokens or 128  # the figures: 128 tokens
    args.max_new_tokens = args.max_new_tokens or 32
    if args.eval and args.eval_tokens < args.window:
        raise ValueError(
            f"--eval-tokens {args.eval_tokens} is less than one --window of {args.window}"
        )
    if args.prefill is not None:
        _int("--prefill", args.prefill, 1, args.window - 2)
    if args.report is not None and not args.eval:
        raise ValueError("--report applies to --eval")
    if args.no_eval_cache and not args.eval:
        raise ValueError("--no-eval-cache applies to --eval")
    if args.generate is not None and not args.generate.strip():
        raise ValueError("--generate needs a non-empty prompt")
    args.device = check_device(args.device)


def _check_report(args: argparse.Namespace, default: Path | None) -> None:
    """``args.report_path`` of --eval: --report, else ``default``, else sparsify-NAME.html."""
    if not args.eval:
        return
    args.report_path = Path(args.report or default or f"sparsify-{args.name}.html")
    if args.report_path.is_dir():
        raise ValueError(f"--report {args.report_path} is a folder; give a file name")
    if default is None and not args.report_path.parent.is_dir():
        raise ValueError(f"--report folder {args.report_path.parent} does not exist")


# flags a saved sparsified model fixes: its method, state, calibration and tuning
_FIXED_BY_SAVE = (
    "method", "sparsity", "sparsities", "overrides", "calib", "calib_tokens", "tune_steps",
    "tune_lr", "tune_batch", "tune_seed", "tune_rows", "tune_rank", "tune_weights",
    "tune_weights_lr", "tune_hidden", "tune_tokens", "out", "force",
)  # fmt: skip


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _defaults() -> dict[str, Any]:
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return vars(parser.parse_args(["MODEL"]))


def _validate_saved(args: argparse.Namespace, info: dict[str, Any]) -> None:
    """A saved sparsified model: refuse what it fixes; find the dense baseline; --eval,
    --bench and --generate flags as in the other mode."""
    from actlab.sparse import resolve_model

    folder = Path(args.model).expanduser()
    params = _dict(info.get("params"))
    target = params.get("sparsity")
    method = str(info.get("method") or "?")
    what = f"{method} at {target:.2f}" if isinstance(target, (int, float)) else method
    defaults = _defaults()
    averaging = ("out", "force") if args.average else ()  # the average is a new model to save
    for dest in _FIXED_BY_SAVE:
        if dest not in averaging and getattr(args, dest) != defaults[dest]:
            flag = "--set" if dest == "overrides" else "--" + dest.replace("_", "-")
            raise ValueError(
                f"{flag}: {folder} is a saved sparsified model ({what}); its method, state and "
                f"calibration are fixed: drop {flag}, or sparsify the dense model again"
            )
    args.model_key = str(folder)
    args.name = folder.name
    args.members = _check_members(args, folder, info)
    args.methods = [method]
    args.sparsity = float(target) if isinstance(target, (int, float)) else 0.0
    _check_use_flags(args)
    _check_report(args, Path(args.out) / "report.html" if args.out else None)
    args.dense_key = None
    if not (args.eval or args.bench or args.generate or args.average):
        return
    fingerprint = _dict(info.get("model"))
    named = args.dense or info.get("base") or fingerprint.get("name")
    if not isinstance(named, str) or not named:
        raise ValueError(f"give --dense MODEL: the dense model {folder} was sparsified from")
    try:
        args.dense_key = resolve_model(named)
    except ValueError as e:
        if args.dense:
            raise ValueError(f"--dense: {e}") from None
        raise ValueError(
            f"give --dense MODEL: the dense model {folder} was sparsified from ({e})"
        ) from None


def _check_members(args: argparse.Namespace, folder: Path, info: dict[str, Any]) -> list[Path]:
    """The saved folders of --average (MODEL first), each a tuned save of MODEL's base model;
    --out checked. [] without --average."""
    from actlab.sparse import saved_info

    if args.average is None:
        return []
    if not isinstance(info.get("tuning"), dict):
        raise ValueError(f"--average: {folder} is not tuned; average saves made with --tune-steps")
    members = [folder]
    for name in args.average:
        other = Path(name).expanduser()
        if other.resolve() in {m.resolve() for m in members}:
            raise ValueError(f"--average: {other} is given twice; average distinct runs")
        try:
            saved = saved_info(other)
        except ValueError as e:
            raise ValueError(f"--average: {e}") from None
        if saved is None:
            raise ValueError(
                f"--average: {other} is not a saved sparsified model (write one with "
                "actlab sparsify MODEL ... --tune-steps N --out DIR)"
            )
        if saved.get("model") != info.get("model"):
            raise ValueError(
                f"--average: {other} was sparsified from another model than {folder}; "
                "average runs of one model"
            )
        members.append(other)
    if args.out is not None:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} exists and is not a folder")
        if out.resolve() in {m.resolve() for m in members}:
            raise ValueError(f"--out {out} is one of the averaged runs; give a new folder")
        if out.is_dir() and any(out.iterdir()) and not args.force:
            raise ValueError(f"--out {out} exists and is not empty; pass --force to write into it")
        args.name = out.name
    return members


# ---------------------------------------------------------------- work
def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _generate(model: Any, tok: Any, prompt: str, n: int) -> str:
    import torch

    enc = tok(prompt, return_tensors="pt").to(next(model.parameters()).device)
    with torch.inference_mode():
        ids = model.generate(**enc, max_new_tokens=n, do_sample=False)
    return str(tok.decode(ids[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))


def _sparsify_one(
    args: argparse.Namespace, model: Any, tok: Any, calib: Any, tune_windows: list[Any] | None
) -> None:
    """Calibrate the one method at --sparsity; print it; --generate; --out."""
    import copy

    import torch

    from actlab.sparse import make_method, realised_sparsity, save_sparse, tune_gains

    method = make_method(args.methods[0], sparsity=args.sparsity, **args.params[args.methods[0]])
    t0 = time.perf_counter()
    state = method.calibrate(model, calib.batches())
    took = time.perf_counter() - t0
    _say(f"calibrated {state.describe()} on {calib.tokens} tokens in {took:.1f} s")
    if args.tune is not None:
        t0 = time.perf_counter()
        assert tune_windows is not None
        state = tune_gains(model, state, tune_windows, args.tune, progress=_say)
        t = state.tuning
        if t:
            what = "gains" + (" and row scales" if t.get("rows") else "")
            what += f" and rank-{t['rank']} corrections" if t.get("rank") else ""
            what += " and the sparsified linears' weights" if t.get("weights") else ""
            _say(
                f"tuned {t['params']} {what} "
                f"in {time.perf_counter() - t0:.1f} s: KL "
                f"{t['kl_first']:.4f} (first tenth of the steps) -> {t['kl_last']:.4f} (last)"
                + (
                    f"; block features {t['feature_first']:.4f} -> {t['feature_last']:.4f}"
                    if "feature_last" in t
                    else ""
                )
            )
    dense_out = _generate(model, tok, args.generate, args.max_new_tokens) if args.generate else ""
    sparse = copy.deepcopy(model)
    report = method.apply(sparse, state)
    report.set_mode("all")  # realised sparsity on the calibration text, every position
    with torch.inference_mode():
        for b in calib.batches():
            sparse(input_ids=b.to(args.device), use_cache=False)
    total, per = realised_sparsity(sparse)
    per_text = ", ".join(f"{k.removesuffix('_proj')} {v:.3f}" for k, v in per.items())
    print(
        f"{args.methods[0]} at target {args.sparsity:.2f}: realised {total:.3f} of block "
        f"parameters on the calibration text ({per_text})"
    )
    report.set_mode(args.protocol)
    if args.generate:
        print(f"dense : {dense_out!r}")
        print(f"sparse: {_generate(sparse, tok, args.generate, args.max_new_tokens)!r}")
    if args.bench:
        _bench(args, model, sparse, tok)
    if args.out:
        calibration = {"text": args.calib, "tokens": calib.tokens, "documents": calib.documents}
        folder = save_sparse(
            args.out,
            sparse,
            tok,
            state,
            name=args.name,
            mode=args.protocol,
            calibration=calibration,
            base=args.model_key,
        )
        print(f"wrote {folder} (reload with actlab.sparse.load_sparse({str(folder)!r}))")


def _bench(args: argparse.Namespace, dense: Any, sparse: Any, tok: Any) -> None:
    """Tokens/s of greedy decoding, dense vs sparse (torch path, then fused kernels), through
    the lean loop (module path and native step) and generate (plain, and routed through the
    native step)."""
    import copy

    import torch

    from actlab.sparse import heldout_windows, kernels_available, time_decode, use_kernels

    prompt = heldout_windows(tok, tokens=64, window=64).ids[:1]  # [1, 64] held-out tokens
    n = args.bench_new_tokens
    head = dense.get_output_embeddings().weight.numel()
    params = (
        sum(p.numel() for p in dense.parameters()) - dense.get_input_embeddings().weight.numel()
    )
    if dense.get_output_embeddings().weight is dense.get_input_embeddings().weight:
        params += head  # tied: the head is still read once per token
    _say(
        f"benchmark: 64-token prompt + {n} greedy tokens, batch 1, best of 2 timed rounds "
        f"interleaved across the rows (after one warm-up round), {torch.get_num_threads()} "
        "thread(s)"
    )
    name = f"{args.methods[0]} {args.sparsity:.2f}"
    lean, native = "lean loop", "lean loop, native step"
    gen, gen_n = "generate", "generate, native step"  # HF's plain generate; routed (use_kernels)
    plans: list[tuple[str, Any, list[str]]] = [("dense", dense, [lean, native, gen, gen_n])]
    plans.append((f"{name} (torch)", sparse, [lean, gen]))
    if kernels_available():
        variants = (
            (torch.float32, "kernels", False),
            (torch.bfloat16, "kernels, bf16", False),
            (torch.bfloat16, "kernels, bf16 + bf16 head", True),  # the LM head packed too
        )
        for dtype, label, with_head in variants:
            shared = {id(t): t for t in (*sparse.parameters(), *sparse.buffers())}
            fused = copy.deepcopy(sparse, shared)  # the modules copied, the weights shared
            use_kernels(fused, dtype, head=with_head)
            paths = [lean, native, gen, gen_n] if label == "kernels" else [native, gen_n]
            plans.append((f"{name} ({label})", fused, paths))
    ok = {id(m): _native_ok(m) for _, m, _ in plans}
    runs = [
        (label, m, path)
        for label, m, paths in plans
        for path in paths
        if path not in (native, gen_n) or ok[id(m)]
    ]
    timed: dict[int, Any] = {}
    for r in range(3):  # round 0 warms every run up, then 2 timed rounds, interleaved
        for i, (_, m, path) in enumerate(runs):
            lean_loop = path in (lean, native)
            how = path == native if lean_loop else path == gen_n  # generate: routed or plain
            t = time_decode(m, prompt, n, lean=lean_loop, native=how, rounds=1, warmup=False)
            if r and (i not in timed or t.seconds < timed[i].seconds):
                timed[i] = t
    dense_t = {path: timed[i] for i, (label, _, path) in enumerate(runs) if label == "dense"}
    rows = []
    for i, (label, _, path) in enumerate(runs):
        t = timed[i]
        ref = dense_t[gen] if path in (gen, gen_n) else dense_t[lean]  # what a user compares
        same = float((t.tokens == ref.tokens).double().mean())
        rows.append((label, path, t, ref, same, equal_prefix(t.tokens, ref.tokens)))
    best = max(t.tokens_per_second for t in dense_t.values())
    print(
        "| model | path | tok/s | x dense (lean loop or HF generate) | generated tokens equal "
        f"to dense | equal before the first difference (of {n}) | x best dense |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, path, t, ref, same, prefix in rows:
        print(
            f"| {label} | {path} | {t.tokens_per_second:.2f} | "
            f"{t.tokens_per_second / ref.tokens_per_second:.2f} | {same:.3f} | {prefix} | "
            f"{t.tokens_per_second / best:.2f} |"
        )
    print(
        f"the LM head stays dense: {head / params:.0%} of the per-token weights read, which "
        "caps the end-to-end speed-up; it is float32 torch except in the '+ bf16 head' rows "
        "(use_kernels(..., head=True): the dense kernel on a bf16 copy); 'x dense' compares "
        "lean rows with the dense model through the lean loop's module path and generate rows "
        "with Hugging Face's plain generate on the dense model, 'x best dense' with the "
        "fastest dense row; 'generate, native step' is model.generate routed through the "
        "native decode step (use_kernels installs it; actlab.sparse.native_generate for a "
        "dense model); figures from one run on this machine. Generated tokens are "
        "free-running: after the first difference the sequences diverge, so the fraction equal "
        "is ~0 once an early token differs; the prefix column says where they part (use --eval "
        "for next-token agreement)"
    )


def equal_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many leading tokens two generated sequences ([n] ids each) share."""
    differ = (a != b).nonzero()
    return int(differ[0, 0]) if len(differ) else int(a.numel())


def _native_ok(model: Any) -> bool:
    from actlab.sparse import LeanDecoder

    dec = LeanDecoder(model, 2)
    if dec.native is None:
        _say(f"native step skipped: {dec.native_reason}")
    return dec.native is not None


def _evaluate(
    args: argparse.Namespace, model: Any, tok: Any, calib: Any, tune_windows: list[Any] | None
) -> None:
    from actlab.sparse import heldout_windows, sparsity_curves

    held = heldout_windows(tok, tokens=args.eval_tokens, window=args.window)
    params = args.params
    if args.tune is not None:
        tune = {f"tune_{k}": v for k, v in vars(args.tune).items()}
        params = {m: {**p, **tune} for m, p in params.items()}
    rows = sparsity_curves(
        model,
        calib.batches(),
        held.ids,
        methods=args.methods,
        sparsities=args.targets,
        params=params,
        protocol=args.protocol,
        prefill=args.prefill,
        batch_size=args.batch,
        progress=_say,
        tune_calibration=tune_windows,
        dense_cache=_dense_cache(args),
    )
    _write_eval(args, rows, held, f"{calib.tokens} tokens of {_calib_text(args)}")


def _dense_cache(args: argparse.Namespace) -> Any:
    """The dense result cache of --eval (None with --no-eval-cache)."""
    from actlab.sparse import DenseCache

    return None if args.no_eval_cache else DenseCache()


def _write_eval(args: argparse.Namespace, rows: list[Any], held: Any, calibration: str) -> None:
    """Print the curve rows and their facts; write the HTML report and its JSON."""
    from actlab.report import write_sparsify_report
    from actlab.sparse import curves_table

    for r in rows:
        r["model"] = args.name
    first = rows[0]
    facts = [
        ("model", args.name),
        ("protocol", _protocol_text(args.protocol, first["prefill"], first["window"])),
        ("calibration", calibration),
        (
            "evaluation",
            f"{first['eval_tokens']} tokens ({first['eval_windows']} windows of "
            f"{first['window']}), {first['scored']} scored predictions; documents: "
            + ", ".join(held.documents),
        ),
        ("dense perplexity", f"{first['ppl']:.4f}"),
    ]
    if first.get("dense_cached"):
        facts.append(("dense result", f"read from {first['dense_cached']}"))
    print(curves_table(rows))
    for k, v in facts:
        print(f"{k}: {v}")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    path = write_sparsify_report(
        args.report_path, rows, title=f"actlab sparsify {args.name}", facts=facts
    )
    data = path.with_suffix(".json")
    data.write_text(json.dumps({"facts": dict(facts), "rows": rows}, indent=1, default=str))
    print(f"wrote {path} and {data}")


def _tune_windows(args: argparse.Namespace, tok: Any, calib: Any) -> list[Any]:
    """The windows the tuning draws from: the calibration windows, or --tune-tokens of the
    same text (the same round robin, so the calibration windows come first)."""
    from actlab.sparse import calibration_windows

    if args.tune_tokens is None or args.tune_tokens == calib.tokens:
        return list(calib.batches())
    more = calibration_windows(
        tok,
        tokens=args.tune_tokens,
        window=args.window,
        text=args.calib_text,
        source=args.calib_source,
    )
    return list(more.batches())


def _protocol_text(protocol: str, prefill: int, window: int) -> str:
    scored = f"positions {prefill}..{window - 2} of each window scored"
    if protocol == "decode":
        return (
            f"decode: dense prefill of {prefill} tokens, then sparse decoding with the KV "
            f"cache; {scored}"
        )
    if protocol == "all":
        return f"all: every position sparse in one forward; {scored}"
    return f"last-half: positions {window // 2}.. sparse in one forward (TEAL); {scored}"


def _calib_text(args: argparse.Namespace) -> str:
    if args.calib_text is not None:
        return f"{args.calib}"
    if args.calib_source == "mixed":
        return "the Shakespeare comedies and 8 KJV books that are not held out"
    return "the Shakespeare comedies"


def _check_window(args: argparse.Namespace, model: Any) -> None:
    limit = getattr(model.config, "max_position_embeddings", None)
    if isinstance(limit, int) and args.window > limit:
        raise ValueError(f"--window {args.window} exceeds the model's {limit} positions")


def _tuning_text(tuning: dict[str, Any]) -> str:
    """``k v, ...`` of a state's tuning record; an average names its members' seeds and KLs."""
    members = tuning.get("members")
    shown = {k: v for k, v in tuning.items() if k != "members"}
    text = ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()
    )
    if isinstance(members, list):
        runs = "; ".join(
            f"seed {_dict(m).get('seed', '?')}, KL last {_dict(m).get('kl_last', float('nan')):.4g}"
            for m in members
        )
        text += f" (runs: {runs})"
    return text


def _run_saved(args: argparse.Namespace) -> int:
    """MODEL is a folder written by --out: describe it; --eval / --bench / --generate it
    against the dense model it was sparsified from, without calibrating or tuning again;
    with --average, the average of its tuning and the other runs' instead (--out saves it)."""
    import torch

    from actlab.sparse import (
        load_causal_lm,
        load_sparse,
    )

    dtype = getattr(torch, args.dtype)
    if args.members:
        dense, model, tok, state = _average(args, dtype)
        info = args.saved
        where = f"averaged from {', '.join(str(m) for m in args.members)}"
        if args.out:
            where = f"saved in {args.out}, {where}"
    else:
        _say(f"loading the sparsified model {args.model} ({args.dtype}, {args.device})")
        saved = load_sparse(args.model_key, device=args.device, dtype=dtype, mode=args.protocol)
        model, tok, state, info = saved.model, saved.tokenizer, saved.state, saved.info
        where = f"saved in {args.model}"
    calib = _dict(info.get("calibration"))
    text = f"{calib.get('tokens', '?')} tokens of {calib.get('text', '?')}"
    tuned = _tuning_text(state.tuning)
    print(
        f"{args.out if args.members and args.out else args.model}: {state.describe()}; "
        f"calibrated on {text}" + (f"; tuned: {tuned}" * bool(tuned))
    )
    if not (args.eval or args.bench or args.generate):
        return 0
    if not args.members:
        _say(f"loading the dense model {args.dense_key} ({args.dtype}, {args.device})")
        dense, _ = load_causal_lm(args.dense_key, device=args.device, dtype=dtype)
        _check_dense(args, dense, Path(args.model_key))
    _use_saved(args, dense, model, tok, state, f"{text} ({where})", calib.get("tokens", 0))
    return 0


def _check_dense(args: argparse.Namespace, dense: Any, folder: Path) -> None:
    """One line unless ``dense`` is the model the saved ``folder`` was sparsified from."""
    from actlab.sparse import check_fingerprint, read_fingerprint

    expected = read_fingerprint(folder)  # the fingerprint in the folder's state file
    if expected is None:
        return
    try:
        check_fingerprint(dense, expected)
    except ValueError:
        raise ValueError(
            f"--dense {args.dense_key} is not the model {folder} was sparsified from "
            f"({expected.get('name', '?')}, {expected.get('params', '?')} parameters); "
            "give that one with --dense"
        ) from None


def _average(args: argparse.Namespace, dtype: torch.dtype) -> tuple[Any, Any, Any, Any]:
    """The average of the --average runs' states applied to the dense model (checked against
    each run's fingerprint), saved to --out when given: (dense, model, tokenizer, state)."""
    import copy

    from actlab.sparse import (
        apply_state,
        average_states,
        load_causal_lm,
        load_saved_state,
        save_sparse,
    )

    _say(f"loading the dense model {args.dense_key} ({args.dtype}, {args.device})")
    dense, tok = load_causal_lm(args.dense_key, device=args.device, dtype=dtype)
    states = []
    for folder in args.members:
        _check_dense(args, dense, folder)
        states.append(load_saved_state(folder))
    state = average_states(states)  # one line (SparseError) unless runs of one calibration
    _say(f"averaged the tuning of {len(states)} runs")
    model = copy.deepcopy(dense)
    report = apply_state(model, state)
    report.set_mode(args.protocol)
    info = args.saved  # MODEL's config entry: the soup keeps its model, mode and calibration
    if args.out:
        folder = save_sparse(
            args.out,
            model,
            tok,
            state,
            name=str(_dict(info.get("model")).get("name") or ""),
            mode=str(info.get("mode") or args.protocol),
            calibration=_dict(info.get("calibration")),
            base=str(info.get("base") or ""),
        )
        print(f"wrote {folder} (reload with actlab.sparse.load_sparse({str(folder)!r}))")
    return dense, model, tok, state


def _use_saved(
    args: argparse.Namespace,
    dense: Any,
    model: Any,
    tok: Any,
    state: Any,
    calibration: str,
    calib_tokens: int,
) -> None:
    """--generate, --bench and --eval of a saved (or averaged) model against ``dense``."""
    from actlab.sparse import compare_models, heldout_windows

    if args.eval:
        _check_window(args, dense)
    if args.generate:
        print(f"dense : {_generate(dense, tok, args.generate, args.max_new_tokens)!r}")
        print(f"sparse: {_generate(model, tok, args.generate, args.max_new_tokens)!r}")
    if args.bench:
        _bench(args, dense, model, tok)
    if args.eval:
        held = heldout_windows(tok, tokens=args.eval_tokens, window=args.window)
        rows = compare_models(
            dense,
            model,
            state,
            held.ids,
            protocol=args.protocol,
            prefill=args.prefill,
            batch_size=args.batch,
            progress=_say,
            dense_cache=_dense_cache(args),
        )
        rows[1]["calib_tokens"] = rows[0]["calib_tokens"] = calib_tokens
        _write_eval(args, rows, held, calibration)


def run(args: argparse.Namespace) -> int:
    import torch

    from actlab.sparse import calibration_windows, load_causal_lm

    validate(args)
    if args.saved is not None:
        return _run_saved(args)
    dtype = getattr(torch, args.dtype)
    _say(f"loading {args.model} ({args.dtype}, {args.device})")
    model, tok = load_causal_lm(args.model_key, device=args.device, dtype=dtype)
    _check_window(args, model)
    calib = calibration_windows(
        tok,
        tokens=args.calib_tokens,
        window=args.window,
        text=args.calib_text,
        source=args.calib_source,
    )
    tune = _tune_windows(args, tok, calib) if args.tune is not None else None  # built once
    if args.out is not None or args.generate is not None or args.bench or not args.eval:
        _sparsify_one(args, model, tok, calib, tune)
    if args.eval:
        _evaluate(args, model, tok, calib, tune)
    return 0
