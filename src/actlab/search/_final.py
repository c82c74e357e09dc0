"""The end of a search: simplify the top candidates and re-evaluate them against baselines.

The selection used one training seed and the validation split, so its best score is biased
upward (winner's curse). :func:`finalize` therefore takes the ``top`` distinct expressions
of :meth:`SearchResult.ranked`, simplifies each (:func:`~actlab.search.simplify`), and runs
them with **fresh seeds** (1000, 1001, ...) and the task's full default training next to
the ``baselines`` (gelu, relu, crrelu) through the compare machinery of
:mod:`actlab.bench` (mean ± CI of the test metric, paired t and Wilcoxon tests against the
first baseline, Holm-corrected; resumable in its results database), on the model (and
step cap) the search's ``objective`` trained. For a toy ``curve:``
objective, which needs no training, the objective is simply evaluated on each. Formulas
whose spec is longer than the results store's key (255 characters) are skipped (noted), and
so are near-copies of a finalist (equal within 1% relative on the simplifier's grid for three
settings of the learnable scalars, e.g. the same formula with a constant 0.001 instead of
0.0009): the finalists are distinct functions.

``transfer=TASK`` then re-evaluates the same finalists and baselines, with the same fresh
seeds, on a second task (its own default model and training recipe): the Swish paper searched
on a small proxy and transferred to larger models, and a formula that only suits the proxy
shows it here. Each comparison gets a plain-words :class:`~actlab.search.Verdict`
(``FinalResult.verdict``, ``FinalResult.transfer_verdict``): which candidate beat which
baseline significantly, by how much, or the minimum detectable effect when none did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from actlab.search._candidate import Candidate
from actlab.search._objectives import CurveObjective
from actlab.search._result import SearchResult
from actlab.search._simplify import equivalent, simplify
from actlab.search._verdict import Verdict, verdict_from_records

__all__ = ["BASELINES", "FinalResult", "finalize"]

BASELINES: tuple[str, ...] = ("gelu", "relu", "crrelu")
FRESH_SEED0 = 1000
NEAR_TOL = 1e-2  # finalists agreeing within 1% everywhere on the grid count as one


@dataclass
class FinalResult:
    """Simplified top candidates and their re-evaluation."""

    formulas: list[tuple[str, str]]  # (as found, simplified)
    specs: list[str]  # activation specs of the simplified candidates
    baselines: list[str]
    comparison: Any = None  # actlab.bench.CompareResult, for trained tasks
    scores: dict[str, float] = field(default_factory=dict)  # curve objectives
    note: str = ""
    verdict: Verdict | None = None
    transfer_task: str | None = None
    transfer: Any = None  # actlab.bench.CompareResult on the transfer task
    transfer_verdict: Verdict | None = None


def _top(
    result: SearchResult, top: int, skipped: list[str], near: list[str] | None = None
) -> list[tuple[str, Candidate]]:
    from actlab.bench.plan import MAX_SPEC_LEN

    out: list[tuple[str, Candidate]] = []
    seen: set[str] = set()
    for rec in result.ranked():
        found = rec.candidate.formula
        simple = Candidate(simplify(rec.candidate.expr), "simplified", (rec.candidate.hash,))
        if simple.hash in seen:
            continue
        if any(equivalent(c.expr, simple.expr, NEAR_TOL) for _, c in out):
            seen.add(simple.hash)  # a near-copy of a finalist: a wasted slot of the matrix
            if near is not None:
                near.append(simple.formula)
            continue
        if len(simple.spec) > MAX_SPEC_LEN:  # the results store keys runs by spec
            skipped.append(simple.formula)
            continue
        seen.add(simple.hash)
        out.append((found, simple))
        if len(out) >= top:
            break
    return out


def finalize(
    result: SearchResult,
    *,
    top: int = 3,
    seeds: int | Sequence[int] = 5,
    baselines: Sequence[str] = BASELINES,
    epochs: int | None = None,
    db: Any = None,
    workers: int = 1,
    train_fn: Any = None,
    events: Any = None,
    objective: Any = None,
    transfer: str | None = None,
) -> FinalResult:
    """Re-evaluate the ``top`` candidates of ``result`` against ``baselines`` (see above)."""
    if transfer is not None and (result.task.startswith("curve:") or transfer.startswith("curve:")):
        raise ValueError("transfer re-evaluates on a training task; curve: tasks train nothing")
    if isinstance(top, bool) or int(top) != top or top < 1:
        raise ValueError(f"top must be a whole number >= 1, got {top!r}")
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    skipped: list[str] = []
    near: list[str] = []
    picked = _top(result, top, skipped, near)
    final = FinalResult(
        [(f, c.formula) for f, c in picked], [c.spec for _, c in picked], list(baselines)
    )
    notes = []
    if skipped:
        notes.append(f"skipped {len(skipped)} formula(s) too long for the results store")
    if near:
        notes.append(
            f"skipped {len(near)} near-copies of a finalist (within {NEAR_TOL:g} relative "
            "on the grid)"
        )
    final.note = "; ".join(notes)
    if not picked:
        final.note = "no candidate finished successfully; nothing to re-evaluate"
        return final
    if result.task.startswith("curve:"):
        obj = (
            objective if isinstance(objective, CurveObjective) else CurveObjective(result.task[6:])
        )
        for spec, cand in [(b, None) for b in baselines] + [(c.spec, c) for _, c in picked]:
            c = cand if cand is not None else _baseline_candidate(spec)
            if c is None:
                continue
            final.scores[spec] = obj.evaluate(c, obj.default_budget, seed=0, floor=None).value
        return final
    from actlab.bench import compare
    from actlab.bench.plan import DEFAULT_DB

    seed_list = (
        list(range(FRESH_SEED0, FRESH_SEED0 + seeds)) if isinstance(seeds, int) else list(seeds)
    )
    # the re-evaluation trains the model the search trained (and its step cap), not the
    # task's default model
    model = getattr(objective, "model", None)
    over = dict(getattr(objective, "overrides", None) or {})
    max_steps = over.pop("max_steps", None)
    final.comparison = compare(
        [*baselines, *final.specs],
        task=result.task,
        model=model,
        seeds=seed_list,
        epochs=epochs,
        db=db or DEFAULT_DB,
        workers=workers,
        study=f"search:{result.study}/final",
        train_fn=train_fn,
        events=events,
        max_steps=max_steps,
        extra_config=over or None,
        kernel=getattr(objective, "kernel", None),
        threads=getattr(objective, "threads", None),
    )
    final.verdict = _verdict(final.comparison, final)
    if transfer is not None:
        final.transfer_task = transfer
        final.transfer = compare(
            [*baselines, *final.specs],
            task=transfer,
            seeds=seed_list,
            db=db or DEFAULT_DB,
            workers=workers,
            study=f"search:{result.study}/transfer:{transfer}",
            train_fn=train_fn,
            events=events,
            kernel=getattr(objective, "kernel", None),
            threads=getattr(objective, "threads", None),
        )
        final.transfer_verdict = _verdict(final.transfer, final)
    return final


def _verdict(comparison: Any, final: FinalResult) -> Verdict:
    """The verdict on one comparison; the store names candidates by their normalised spec."""
    names = comparison.activations  # [*baselines, *candidates], as the store spells them
    nb = len(final.baselines)
    labels = {k: formula for k, (_, formula) in zip(names[nb:], final.formulas)}
    return verdict_from_records(comparison.records, names[nb:], names[:nb], labels=labels)


def _baseline_candidate(spec: str) -> Candidate | None:
    from actlab.search._candidate import WARM_START, as_candidate

    formula = WARM_START.get(spec)
    return as_candidate(formula, f"baseline:{spec}") if formula else None
