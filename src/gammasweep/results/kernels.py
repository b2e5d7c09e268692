"""Kernel alignment, for numpy arrays and torch tensors alike (the probes measure on the training
device; the figures compare networks from their cubes, without torch)."""

from __future__ import annotations

from typing import TypeVar

Array = TypeVar("Array")  # numpy.ndarray or torch.Tensor


def double_center(kernel: Array) -> Array:
    """H K H with H = I - 11^T / P, for kernels (..., P, P)."""
    kernel = kernel - kernel.mean(axis=-1, keepdims=True)
    return kernel - kernel.mean(axis=-2, keepdims=True)


def centered_alignment(a: Array, b: Array) -> Array:
    """Centered kernel alignment <HAH, HBH>_F / (|HAH|_F |HBH|_F) of kernels (..., P, P) -> (...,):
    1 for proportional kernels, 0 for orthogonal ones, NaN where a kernel is constant. Between
    linear kernels of two representations it is their linear CKA."""
    a, b = double_center(a), double_center(b)
    return (a * b).sum(axis=(-2, -1)) / ((a * a).sum(axis=(-2, -1)) * (b * b).sum(axis=(-2, -1))) ** 0.5
