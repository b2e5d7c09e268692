"""The sweep's settings that the plan resolves per cell, torch-free (the Snakefile parses with them):
the optimizer's, and the precision a gamma trains in."""

from __future__ import annotations

from dataclasses import dataclass

OPTIMIZERS = ("sgd", "signsgd", "adam")


@dataclass(frozen=True)
class OptimizerSettings:
    """An experiment's ``optimizer:`` block: ``name`` (one of ``OPTIMIZERS``); Adam's moment decays
    ``beta1``, ``beta2`` and ``eps``. The default eps is far below torch's 1e-8: gradients scale as
    1/gamma, and at gamma = 1e5 a readout gradient is ~1e-8, where a larger eps would silently turn
    Adam into SGD."""

    name: str = "sgd"
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-12

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; known: {list(OPTIMIZERS)}")

    def settings(self) -> dict:
        """The resolved settings that shape results: the name, and Adam's constants for Adam."""
        return {
            "name": self.name,
            **({"beta1": self.beta1, "beta2": self.beta2, "eps": self.eps} if self.name == "adam" else {}),
        }


def precision(gamma: float, float64_below: float) -> str:
    """'float64' for gamma < ``float64_below`` (the centered difference g - g_0 needs the precision),
    else 'float32': the name of a torch dtype."""
    return "float64" if gamma < float64_below else "float32"
