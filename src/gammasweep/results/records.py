"""What each probe records (``gammasweep.probes.recorder``): variable -> (probe, long name, units). Kept
apart from the probes, without torch, so that cubes and figures are read without it."""

from __future__ import annotations

RECORDS: dict[str, tuple[str, str, str]] = {
    "sharpness": ("sharpness", "top Hessian eigenvalue of the loss on the probe batch (N x that of the weights' "
                  "Hessian); GD on the batch is unstable above 2/eta", "1/eta"),
    "readout_sharpness": ("readout_sharpness", "top eigenvalue of the readout layer's block of the Hessian of the loss "
                          "on the probe batch, x N", "1/eta"),
    "hessian_trace": ("hessian_trace", "trace of the Hessian of the loss on the probe batch, x N (Hutchinson's "
                      "estimator)", "1/eta"),
    "ntk_eigenvalue": ("ntk_spectrum", "top eigenvalues of the empirical NTK of the centered outputs on the probe "
                       "batch, as the MSE Gauss-Newton matrix 2/(P C) J^T J sees them, x N", "1/eta"),
    "hessian_ritz_value": ("spectrum", "Lanczos nodes (Ritz values) of the Hessian of the loss on the probe batch, "
                           "x N; NaN where the Krylov space ran out", "1/eta"),
    "hessian_ritz_weight": ("spectrum", "Gauss-quadrature weights of the nodes, over the starts (sum 1): the spectral "
                            "density is sum_j weight_j delta(lambda - value_j)", "1"),
    "feature_alignment": ("alignment", "centered kernel alignment of the last hidden layer's kernel with the labels' "
                          "kernel", "1"),
    "ntk_alignment": ("alignment", "centered kernel alignment of the empirical NTK (traced over classes) with the "
                      "labels' kernel", "1"),
    "probe_output": ("outputs", "centered network output f(x) on the probe images after the last step", "1"),
    "feature_kernel": ("representation", "last hidden layer's kernel Phi Phi^T / F on the probe images after the "
                       "last step", "1"),
    "weight_movement": ("weight_movement", "relative distance of each layer's parameters from init, "
                        "|theta - theta_0| / |theta_0|", "1"),
    "noether_charge": ("noether_charge", "charge of the rescaling symmetry of two consecutive layers, "
                       "|W_l|^2 + |b_l|^2 - |W_l+1|^2 of the stored weights", "1"),
    "feature_sparsity": ("feature_sparsity", "feature sparsity of each hidden layer or stage on the probe images: "
                         "nonzero entries of its de-duplicated active units / all entries (lower is sparser)", "1"),
}


def probe_of(record: str) -> str:
    """The probe that records ``record``."""
    return RECORDS[record][0]
