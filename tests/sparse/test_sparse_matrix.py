"""Every registered sparsity method, on the tiny Llama: the shared contract.

Registering a method in ``actlab.sparse.METHODS`` opts it into this matrix: the plug-in
interface, realised sparsity within 1 point of each site's target on the calibration text,
sparsity 0 bit-identical to the dense model, the state file round trip (identical logits),
``model.generate``, the model's ``state_dict`` keys unchanged, one-line errors for a bad
sparsity and for an architecture without the projections.
"""

from __future__ import annotations

import copy

import pytest
import torch
from sparse_helpers import logits
from torch import nn

import actlab.sparse as sparse
from actlab.sparse import METHODS, SparseError, SparsityMethod, apply_state, load_state, make_method

NAMES = METHODS.names()


def test_public_names_exist() -> None:
    for name in sparse.__all__:
        assert getattr(sparse, name) is not None, name
    assert {"teal", "cats", "chess"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_contract(name: str, llama: nn.Module, batches: list[torch.Tensor], tmp_path) -> None:
    dense = copy.deepcopy(llama)
    pristine = copy.deepcopy(llama)
    keys = set(llama.state_dict())
    method = make_method(name, sparsity=0.5)
    assert isinstance(method, SparsityMethod)
    assert method.params["sparsity"] == 0.5
    state = method.calibrate(llama, batches)
    assert state.method == name and state.params == method.params
    assert set(state.targets) == set(state.thresholds)
    report = method.apply(llama, state)
    assert set(llama.state_dict()) == keys
    report.reset_counts()
    logits(llama, batches)
    for path, r in report.realised().items():
        assert abs(r - report.targets[path]) <= 0.01, (path, r)
    reloaded = copy.deepcopy(dense)
    apply_state(reloaded, load_state(state.save(tmp_path / f"{name}.safetensors")))
    for a, b in zip(logits(llama, batches), logits(reloaded, batches)):
        assert torch.equal(a, b)
    out = llama.generate(batches[0][:1, :5], max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 9)
    zero = make_method(name, sparsity=0.0)
    zero.apply(dense, zero.calibrate(dense, batches))
    assert any(type(m).__name__.startswith("Sparse") for m in dense.modules())
    for a, b in zip(logits(dense, batches), logits(pristine, batches)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_contract_errors(name: str, batches: list[torch.Tensor]) -> None:
    for bad in (-0.5, 1.0, float("nan"), "half"):
        with pytest.raises(SparseError) as e:
            make_method(name, sparsity=bad)
        assert "\n" not in str(e.value)
    with pytest.raises(SparseError) as e:
        make_method(name, sparsity=0.5).calibrate(nn.Sequential(nn.Linear(4, 4)), batches)
    assert "Llama-style" in str(e.value) and "\n" not in str(e.value)
