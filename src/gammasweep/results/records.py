"""What each probe records (``gammasweep.probes.recorder``): variable -> (probe, long name, units), and
the precision a cube stores it in. Kept apart from the probes, without torch, so that cubes and figures
are read without it.

Units are UDUNITS-2 strings, as CF requires: every record is dimensionless ("1"). The curvature records
are numbers on the scale of 1/eta (GD on the probe batch is unstable above 2/eta), as their long names
say: a unit string cannot, for eta is no unit.
"""

from __future__ import annotations

import numpy as np

RECORDS: dict[str, tuple[str, str, str]] = {
    "sharpness": (
        "sharpness",
        "top Hessian eigenvalue of the loss on the probe batch (N x that of the weights' "
        "Hessian); GD on the batch is unstable above 2/eta (on the scale of 1/eta)",
        "1",
    ),
    "readout_sharpness": (
        "readout_sharpness",
        "top eigenvalue of the readout layer's block of the Hessian of the loss "
        "on the probe batch, x N (on the scale of 1/eta)",
        "1",
    ),
    "hessian_trace": (
        "hessian_trace",
        "trace of the Hessian of the loss on the probe batch, x N (Hutchinson's estimator; on the scale of 1/eta)",
        "1",
    ),
    "ntk_eigenvalue": (
        "ntk_spectrum",
        "top eigenvalues of the empirical NTK of the centered outputs on the probe "
        "batch, as the MSE Gauss-Newton matrix 2/(P C) J^T J sees them, x N (on the scale of 1/eta)",
        "1",
    ),
    "hessian_ritz_value": (
        "spectrum",
        "Lanczos nodes (Ritz values) of the Hessian of the loss on the probe batch, "
        "x N (on the scale of 1/eta); NaN where the Krylov space ran out",
        "1",
    ),
    "hessian_ritz_weight": (
        "spectrum",
        "Gauss-quadrature weights of the nodes, over the starts (sum 1): the spectral "
        "density is sum_j weight_j delta(lambda - value_j)",
        "1",
    ),
    "feature_alignment": (
        "alignment",
        "centered kernel alignment of the last hidden layer's kernel with the labels' kernel",
        "1",
    ),
    "ntk_alignment": (
        "alignment",
        "centered kernel alignment of the empirical NTK (traced over classes) with the labels' kernel",
        "1",
    ),
    "probe_output": ("outputs", "centered network output f(x) on the probe images after the last step", "1"),
    "feature_kernel": (
        "representation",
        "last hidden layer's kernel Phi Phi^T / F on the probe images after the last step",
        "1",
    ),
    "weight_movement": (
        "weight_movement",
        "relative distance of each layer's parameters from init, |theta - theta_0| / |theta_0|",
        "1",
    ),
    "noether_charge": (
        "noether_charge",
        "charge of the rescaling symmetry of two consecutive layers, "
        "|W_l|^2 + |b_l|^2 - |W_l+1|^2 of the stored weights",
        "1",
    ),
    "feature_sparsity": (
        "feature_sparsity",
        "feature sparsity of each hidden layer or stage on the probe images: "
        "nonzero entries of its de-duplicated active units / all entries (lower is sparser)",
        "1",
    ),
}


def probe_of(record: str) -> str:
    """The probe that records ``record``."""
    return RECORDS[record][0]


# Stored in float64; every other record in float32 (``stored_dtype``). float32's relative rounding (6e-8)
# is far below the spread between seeds and below what any figure resolves of a curvature, alignment,
# output, kernel, movement or sparsity record; it halves the paper cube's largest record, the feature
# kernel (21 x 49 x 3 x 256 x 256: 1.6 GB in float64). A Noether charge is a difference of two layers'
# squared norms (|W_l|^2 ~ 4e5 at width 512) whose drift is the signal: float32 would round it to ~0.03,
# so it keeps float64. Losses, accuracies and divergence are no probe records: cubes keep them in float64
# (eta* and eta_max are read off them).
FLOAT64_RECORDS = frozenset({"noether_charge"})


def stored_dtype(record: str) -> np.dtype:
    """The dtype a cube stores probe record ``record`` in: float64 for ``FLOAT64_RECORDS``, else float32."""
    return np.dtype(np.float64 if record in FLOAT64_RECORDS else np.float32)
