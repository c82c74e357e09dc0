"""Time one step of ``actlab.sparse.tune_gains`` against its plain twin, side by side.

    python benchmarks/bench_tune.py [--model smollm2] [--sparsity 0.4] [--batch 4]
        [--window 256] [--rounds 6] [--threads 2] [--no-rows]

A tuning step is: the dense model's logits (no grad), the sparse student's logits, the KL of
the two on the second half of each window, its backward, one Adam step. Two implementations:

- ``plain``: the logits of every position, then sliced; output-row scales as the weight
  parametrisation ``W -> diag(r) W`` (autograd then forms each scaled linear's weight
  gradient, a GEMM of the forward's size, to reduce it to ``dL/dr``);
- ``actlab``: what ``tune_gains`` runs: the dense model's final hidden states of the
  scored positions cached once (per step only its LM head runs), the student's LM head on
  the scored positions only (``logits_to_keep``) and the row scales as an output hook
  ``y = r * (W x)``, whose gradient is elementwise.

Both start from the same untuned student and see the same windows; the script checks that
their first losses agree and that their gradients agree to float32 tolerance, then prints
the median seconds per step of each over interleaved rounds (order shuffled per round) and
the ratio plain / actlab.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from collections.abc import Callable

import torch
from _common import interleaved_samples
from torch import nn
from torch.nn.utils import parametrize


class _WeightRowScale(nn.Module):
    """The plain twin's parametrisation ``W -> diag(r) W``."""

    def __init__(self, r: nn.Parameter) -> None:
        super().__init__()
        self.r = r

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.r.unsqueeze(1)  # (out, in) * (out, 1)


def _student(model: nn.Module, state: object, rows: bool, plain: bool) -> tuple:
    """A float32 sparse copy in mode last-half with its gains (and row scales) trainable."""
    from actlab.sparse import apply_state, gain_parameters
    from actlab.sparse._modules import SparseGatedMLP, SparseLinear
    from actlab.sparse._tune import _RowScale, scaled_linears

    student = copy.deepcopy(model).float()
    apply_state(student, state)  # type: ignore[arg-type]
    for m in student.modules():
        if isinstance(m, (SparseLinear, SparseGatedMLP)):
            m.mode, m.counting = "last-half", False
    student.eval()
    for p in student.parameters():
        p.requires_grad_(False)
    trained = []
    for p in gain_parameters(student).values():
        p.requires_grad_(True)
        trained.append(p)
    if rows:
        for lin in scaled_linears(student).values():
            scale = _RowScale(lin.out_features, lin.weight)
            if plain:
                parametrize.register_parametrization(lin, "weight", _WeightRowScale(scale.r))
            else:
                scale.attach(lin)
            trained.append(scale.r)
    return student, trained


def _step_fn(
    model: nn.Module, student: nn.Module, trained: list, ids: torch.Tensor, plain: bool
) -> tuple[Callable[[], float], Callable[[], list[torch.Tensor]]]:
    from actlab.sparse._calls import forward_logits
    from actlab.sparse._tune import _kl, _Teacher

    half = ids.shape[1] // 2
    keep = ids.shape[1] - half
    opt = torch.optim.Adam(trained, lr=1e-4)
    index = torch.arange(ids.shape[0])
    teacher = None if plain else _Teacher(model, ids, keep, ids.shape[0], ids.device)
    if teacher is not None and teacher.hidden is None:
        raise SystemExit("the teacher cache is not in use for this model")

    def loss() -> torch.Tensor:
        if plain:
            with torch.no_grad():
                dense = model(ids).logits[:, half:-1]
        else:
            dense = teacher.logits(index, ids)[:, :-1]  # type: ignore[union-attr]
        if plain:
            return _kl(dense, student(ids).logits[:, half:-1])
        return _kl(dense, forward_logits(student, ids, keep).logits[:, -keep:-1])

    def step() -> float:
        out = loss()
        opt.zero_grad(set_to_none=True)
        out.backward()
        opt.step()
        return float(out.detach())

    def grads() -> list[torch.Tensor]:
        opt.zero_grad(set_to_none=True)
        loss().backward()
        return [p.grad.detach().clone() for p in trained]

    return step, grads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--sparsity", type=float, default=0.4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-rows", action="store_true", help="tune the gains only")
    args = ap.parse_args()

    from actlab.sparse import calibration_windows, load_causal_lm, make_method

    torch.set_num_threads(args.threads)
    model, tok = load_causal_lm(args.model, dtype=torch.float32)
    model.eval()
    calib = calibration_windows(tok, tokens=args.batch * args.window, window=args.window)
    state = make_method("teal", sparsity=args.sparsity).calibrate(model, calib.batches())
    ids = calib.ids[: args.batch]  # [batch, window]
    rows = not args.no_rows
    fns, grads = {}, {}
    for name, plain in (("plain", True), ("actlab", False)):
        student, trained = _student(model, state, rows, plain)
        fns[name], grads[name] = _step_fn(model, student, trained, ids, plain)
    # the two are the same computation: first gradients agree (before any step)
    g_plain, g_new = grads["plain"](), grads["actlab"]()
    worst = max(
        float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
        for a, b in zip(g_plain, g_new, strict=True)
    )
    print(
        f"bench_tune: {args.model}, TEAL {args.sparsity:.0%}, batch {args.batch} x "
        f"{args.window} tokens, {'gains + row scales' if rows else 'gains only'}, "
        f"{sum(p.numel() for p in g_new)} tuned values, {args.threads} thread(s), "
        f"torch {torch.__version__}"
    )
    print(f"gradients of the two, worst max-abs difference / max-abs: {worst:.2e}")
    if worst > 1e-3:
        raise SystemExit("the two steps disagree: not the same computation")

    def call(f: Callable[[], float]) -> Callable[[], None]:
        return lambda: None if f() is None else None

    times = interleaved_samples({k: call(f) for k, f in fns.items()}, args.rounds, warmup=1)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [p / a for p, a in zip(times["plain"], times["actlab"], strict=True)]
    for k in fns:
        print(f"  {k:7s} median {med[k]:.3f} s/step over {args.rounds} rounds")
    print(
        f"plain / actlab: {statistics.median(ratios):.2f}x (median of per-round ratios; "
        f"min {min(ratios):.2f}, max {max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
