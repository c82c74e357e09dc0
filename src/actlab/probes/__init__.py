"""Activation probes: streamed, bounded-memory statistics from forward hooks.

    import actlab
    with actlab.probe(model) as p:                       # default: sparsity, distribution,
        model(x)                                         #          massive, attention
    p.summary().print()

A probe implements ``update(name, module, output)`` and ``summary() -> dict``; the manager
(:class:`ProbeManager`) owns hooks, sampling and memory bounds. :data:`PROBES` is the probe
registry (``PROBES.names()``, ``PROBES.meta("sparsity")["description"]``), filled by
``@register_probe`` on each probe class: adding a probe is adding one module to this folder
(or registering your own class). Probes, each validated against closed forms or brute force
in ``tests/probes``:

    SparsityProbe            zero / near-zero fractions, dead units, TLS, CLS_8
    DistributionProbe        pre-activation histogram + moments, to_density() -> (x, p, p')
    MassiveActivationProbe   max|h| / median|h| per block, where it sits; fit_ratio_curve
    AttentionEntropyProbe    per-head attention entropy, normalised, entropy_bands
    EntropyProbe             EBAB entropy of activations
    InfoPlaneProbe           H(T); I(X;T) (with input ids), I(T;Y): EBAB, aKDE (explicit σ²),
                             PCA-compressed kNN
    DSEProbe                 diffusion spectral entropy, DSMI
    RoutingProbe             MoE routing entropy, expert load; routing_fluctuation

Padded batches: the ``attention_mask=`` keyword of the model call (or
``p.set_context(attention_mask=m)``) leaves padded tokens out of every per-token statistic.
Side information per batch: ``p.set_context(labels=y, input_ids=ids)``.

Also public: ``ProbeCallback`` (a trainer callback), ``ProbeTable`` (what ``summary()``
returns), ``Probe`` / ``ProbeContext`` / ``ProbeArgumentError`` (writing a probe),
``make_probe``, ``entropy_bands`` and ``use_eager_attention`` (attention probes on Hugging Face
models). The estimators are plain functions in their modules (bits throughout):
:mod:`~actlab.probes.binning` (``ebab_entropy``, ``ebab_mi_inputs``, ``ebab_mi_labels``),
:mod:`~actlab.probes.kde` (``kde_entropy``, ``kde_mi_xt``, ``kde_mi_labels``),
:mod:`~actlab.probes.knn` (``ksg_mi``, ``kl_entropy``, ``compressed_mi``),
:mod:`~actlab.probes.dse` (``diffusion_spectral_entropy``, ``dsmi``).
"""

from __future__ import annotations

from actlab.probes.attention import AttentionEntropyProbe, entropy_bands, use_eager_attention
from actlab.probes.base import Probe, ProbeArgumentError, ProbeContext
from actlab.probes.callback import ProbeCallback
from actlab.probes.distribution import DistributionProbe
from actlab.probes.dse import DSEProbe
from actlab.probes.information import EntropyProbe, InfoPlaneProbe
from actlab.probes.manager import (
    DEFAULT_PROBES,
    PROBES,
    ProbeManager,
    make_probe,
    probe,
    register_probe,
)
from actlab.probes.massive import MassiveActivationProbe
from actlab.probes.routing import RoutingProbe
from actlab.probes.sparsity import SparsityProbe
from actlab.probes.table import ProbeTable

__all__ = [
    "DEFAULT_PROBES",
    "PROBES",
    "AttentionEntropyProbe",
    "DSEProbe",
    "DistributionProbe",
    "EntropyProbe",
    "InfoPlaneProbe",
    "MassiveActivationProbe",
    "Probe",
    "ProbeArgumentError",
    "ProbeCallback",
    "ProbeContext",
    "ProbeManager",
    "ProbeTable",
    "RoutingProbe",
    "SparsityProbe",
    "entropy_bands",
    "make_probe",
    "probe",
    "register_probe",
    "use_eager_attention",
]
