"""plot_activations and activation_curve: values, derivative, signature, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actlab.report import activation_curve, plot_activations
from actlab.report.curves import new_figure


def test_curve_values_and_derivative() -> None:
    x, f, df = activation_curve("relu", (-2.0, 2.0), 9)
    assert np.allclose(x, np.linspace(-2, 2, 9))
    assert np.allclose(f, np.maximum(x, 0))
    assert np.allclose(df[x < 0], 0) and np.allclose(df[x > 0], 1)
    x, f, df = activation_curve("tanh", (-3.0, 3.0), 61)
    assert np.allclose(df, 1 - np.tanh(x) ** 2, atol=1e-6)


def test_plot_to_file_and_into_axes(tmp_path: Path) -> None:
    fig = plot_activations(["relu", "gelu", "crrelu(eps=0.1)"], tmp_path / "a.png", n=101)
    assert (tmp_path / "a.png").read_bytes().startswith(b"\x89PNG")
    ax = fig.axes[0]
    assert len(ax.lines) == 3 * 2 + 2  # f and f' per activation, plus the two zero lines
    assert ax.get_xlim() == (-4.0, 4.0)
    other = new_figure()
    ax2 = other.add_subplot()
    assert plot_activations(["silu"], ax=ax2, xlim=(-1.0, 1.0), n=11) is other
    plot_activations(["polyrelu"], tmp_path / "p.svg", n=51)  # x^3: y-range capped, still fine
    assert (tmp_path / "p.svg").read_text().lstrip().startswith("<?xml")


def test_plot_errors() -> None:
    with pytest.raises(ValueError, match="at least one"):
        plot_activations([])
    with pytest.raises(ValueError, match="unknown activation"):
        plot_activations(["nope"])
    with pytest.raises(ValueError, match="increasing"):
        activation_curve("relu", (1.0, -1.0))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot_activations(["relu"], "/nonexistent-dir/x.png")
