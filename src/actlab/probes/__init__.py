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

The estimators are plain functions too (bits throughout): ``ebab_entropy``,
``ebab_mi_inputs``, ``ebab_mi_labels``, ``kde_entropy``, ``kde_mi_xt``, ``kde_mi_labels``, ``ksg_mi``,
``kl_entropy``, ``compressed_mi``, ``diffusion_spectral_entropy``, ``dsmi``.
"""

from __future__ import annotations

from actlab.probes.attention import (
    AttentionEntropyProbe,
    entropy_bands,
    row_entropy,
    use_eager_attention,
)
from actlab.probes.base import Probe, ProbeArgumentError, ProbeContext, Reservoir
from actlab.probes.binning import (
    discrete_entropy,
    ebab_edges,
    ebab_entropy,
    ebab_mi,
    ebab_mi_inputs,
    ebab_mi_labels,
)
from actlab.probes.callback import ProbeCallback
from actlab.probes.distribution import DistributionProbe, density_from_histogram
from actlab.probes.dse import DSEProbe, diffusion_spectral_entropy, dsmi
from actlab.probes.information import EntropyProbe, InfoPlaneProbe
from actlab.probes.kde import adaptive_noise_var, kde_entropy, kde_mi_labels, kde_mi_xt
from actlab.probes.knn import compressed_mi, compressed_mi_labels, kl_entropy, ksg_mi
from actlab.probes.manager import (
    DEFAULT_PROBES,
    PROBES,
    ProbeManager,
    default_probes,
    make_probe,
    probe,
    register_probe,
)
from actlab.probes.massive import MassiveActivationProbe, RatioCurveFit, fit_ratio_curve
from actlab.probes.routing import RoutingProbe, routing_entropy, routing_fluctuation
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
    "RatioCurveFit",
    "Reservoir",
    "RoutingProbe",
    "SparsityProbe",
    "adaptive_noise_var",
    "compressed_mi",
    "compressed_mi_labels",
    "default_probes",
    "density_from_histogram",
    "diffusion_spectral_entropy",
    "discrete_entropy",
    "dsmi",
    "ebab_edges",
    "ebab_entropy",
    "ebab_mi",
    "ebab_mi_inputs",
    "ebab_mi_labels",
    "entropy_bands",
    "fit_ratio_curve",
    "kde_entropy",
    "kde_mi_labels",
    "kde_mi_xt",
    "kl_entropy",
    "ksg_mi",
    "make_probe",
    "probe",
    "register_probe",
    "routing_entropy",
    "routing_fluctuation",
    "row_entropy",
    "use_eager_attention",
]
