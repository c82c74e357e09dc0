"""Training-free activation sparsity for LLM inference: TEAL, CATS, CHESS, WINA.

A method (registered in :data:`METHODS`) calibrates thresholds on a dense model and applies
them by wrapping modules (:func:`actlab.surgery.replace_modules`, all or nothing)::

    from actlab.sparse import METHODS, load_state, apply_state, make_method

    METHODS.names()                              # ['cats', 'chess', 'teal', 'wina']
    method = make_method("teal", sparsity=0.5, allocation="greedy")
    state = method.calibrate(model, batches)     # batches: LongTensor token ids [B, T]
    report = method.apply(model, state)          # SparseLinear on all 7 projections
    model.generate(...)                          # works as before
    print(report.table())                        # site | target | threshold | realised
    report.set_mode("decode")                    # prefill dense, decode sparse
    state.save("sparse.safetensors")             # thresholds + JSON header (method, params)
    apply_state(fresh_model, load_state("sparse.safetensors"))

Evaluation and saving (held-out text that calibration never sees; see ``_text.py``)::

    calib = calibration_windows(tokenizer, tokens=2048)   # Shakespeare comedies
    held = heldout_windows(tokenizer, tokens=4096)        # tragedies + KJV books, [16, 256]
    dense = evaluate(model, held.ids, protocol="decode")  # prefill dense, decode with the cache
    rows = sparsity_curves(model, calib.batches(), held.ids, methods=["teal", "cats"])
    save_sparse("out", sparse_model, tokenizer, state, name="smollm2")
    loaded = load_sparse("out")                           # .model .tokenizer .state .report

Sparsity 0 leaves every forward bit-identical to the dense model. The model's ``state_dict``
keys do not change (the wrappers share the original parameters), so the weights are saved
and loaded as usual and the thresholds travel in the state file.
"""

from __future__ import annotations

from actlab.sparse._average import average_states
from actlab.sparse._base import (
    METHODS,
    SparsityMethod,
    SparsityReport,
    apply_state,
    install,
    make_method,
)
from actlab.sparse._decode import LeanDecoder
from actlab.sparse._dense_cache import DenseCache, default_dense_cache
from actlab.sparse._eval import (
    DEFAULT_SPARSITIES,
    EvalResult,
    compare_models,
    curves_table,
    delta_ci,
    evaluate,
    realised_sparsity,
    rotation_overhead,
    sparsity_curves,
)
from actlab.sparse._generate import DecodeTiming, generate_routing, native_generate, time_decode
from actlab.sparse._kernels import KernelReport, drop_kernels, kernels_available, use_kernels
from actlab.sparse._modules import MODES, SparseGatedMLP, SparseLinear, exact_quantile
from actlab.sparse._orthogonal import (
    Orthogonalized,
    orthogonalize,
    pca_bases,
    restore_rotation,
    rotation_missing,
    sparse_basis,
)
from actlab.sparse._pplp import PPLPSparsity, ppl_p_sparsity
from actlab.sparse._saved import (
    SparseModel,
    apply_saved_state,
    check_fingerprint,
    load_causal_lm,
    load_saved_state,
    load_sparse,
    model_fingerprint,
    read_fingerprint,
    resolve_model,
    save_sparse,
    saved_info,
)
from actlab.sparse._sites import INPUT_OF, PROJECTIONS, Block, find_blocks
from actlab.sparse._state import (
    SparseError,
    SparsityState,
    Threshold,
    check_sparsity,
    load_state,
)
from actlab.sparse._text import (
    CALIBRATION_BOOKS,
    CALIBRATION_PLAYS,
    CALIBRATION_SOURCES,
    HELDOUT_BOOKS,
    HELDOUT_PLAYS,
    TextWindows,
    calibration_documents,
    calibration_windows,
    heldout_windows,
)
from actlab.sparse._topk import SparseTopKLinear
from actlab.sparse._tune import TuneConfig, gain_parameters, scaled_linears, tune_gains

__all__ = [
    "CALIBRATION_BOOKS",
    "CALIBRATION_PLAYS",
    "CALIBRATION_SOURCES",
    "DenseCache",
    "DEFAULT_SPARSITIES",
    "HELDOUT_BOOKS",
    "HELDOUT_PLAYS",
    "EvalResult",
    "SparseModel",
    "TextWindows",
    "apply_saved_state",
    "average_states",
    "calibration_documents",
    "calibration_windows",
    "check_fingerprint",
    "compare_models",
    "curves_table",
    "default_dense_cache",
    "delta_ci",
    "evaluate",
    "heldout_windows",
    "load_causal_lm",
    "load_saved_state",
    "load_sparse",
    "model_fingerprint",
    "read_fingerprint",
    "realised_sparsity",
    "rotation_overhead",
    "resolve_model",
    "save_sparse",
    "saved_info",
    "sparsity_curves",
    "time_decode",
    "INPUT_OF",
    "KernelReport",
    "DecodeTiming",
    "LeanDecoder",
    "METHODS",
    "MODES",
    "Orthogonalized",
    "PROJECTIONS",
    "Block",
    "SparseError",
    "SparseGatedMLP",
    "SparseLinear",
    "SparseTopKLinear",
    "TuneConfig",
    "gain_parameters",
    "scaled_linears",
    "tune_gains",
    "SparsityMethod",
    "SparsityReport",
    "SparsityState",
    "Threshold",
    "apply_state",
    "check_sparsity",
    "drop_kernels",
    "exact_quantile",
    "find_blocks",
    "install",
    "kernels_available",
    "load_state",
    "make_method",
    "orthogonalize",
    "pca_bases",
    "ppl_p_sparsity",
    "PPLPSparsity",
    "restore_rotation",
    "rotation_missing",
    "sparse_basis",
    "use_kernels",
    "generate_routing",
    "native_generate",
]
