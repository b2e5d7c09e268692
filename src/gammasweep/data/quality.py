"""Quality gate for a generated, labelled training pool.

A generated pool is only useful if each image shows its conditioning class and the classes are
balanced. The gate measures both with a small reference classifier trained on REAL images:

* ``agreement``: the fraction of generated images the classifier labels as their conditioning
  class. A working generator scores near the classifier's own real test accuracy; an untrained or
  broken one scores near chance (1 / num_classes).
* ``imbalance``: ``max_k |count_k - N / K| / (N / K)`` over the K classes of the pool's labels.

A broken generator thereby fails a rule (``check_quality`` raises) instead of silently feeding
training. Images are arrays (N, H, W, C), uint8 with values 0..255 or float32 on the [0, 1] scale (a
pool stored as float32), labels int64 arrays (N,).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "QualityGateError",
    "ReferenceCNN",
    "check_quality",
    "classify",
    "quality_report",
    "train_reference_classifier",
]


class QualityGateError(RuntimeError):
    """A generated pool failed the quality gate; the message lists every reason."""


class ReferenceCNN(nn.Module):
    """Two (3x3 conv + ReLU + 2x2 max-pool) blocks, then a linear layer to the class logits.

    Input: float (B, C, H, W) with values in [0, 1]; output: logits (B, num_classes).
    Works for 8x8 (-> 2x2 feature maps) and 28x28 (-> 7x7) inputs; H and W must be >= 4.
    """

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, width: int = 16) -> None:
        super().__init__()
        h, w, c = (int(v) for v in image_shape)
        if min(h, w) < 4 or c < 1:
            raise ValueError(f"image_shape (H, W, C) = {image_shape} needs H, W >= 4 and C >= 1")
        self.image_shape = (h, w, c)
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width * (h // 4) * (w // 4), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _check_images(images: np.ndarray, labels: np.ndarray | None = None) -> None:
    if not isinstance(images, np.ndarray) or images.dtype not in (np.uint8, np.float32) or images.ndim != 4:
        raise ValueError(
            f"images must be a uint8 or float32 array (N, H, W, C); got "
            f"{getattr(images, 'dtype', type(images))} {getattr(images, 'shape', '')}"
        )
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"labels must be integers of shape ({images.shape[0]},); got {labels.dtype} {labels.shape}"
            )


def _to_input(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, C) 0..255 -> float32 (B, C, H, W) in [0, 1] on ``device``; float32 images, already
    on that scale, as they are."""
    x = torch.as_tensor(images).to(device).permute(0, 3, 1, 2)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x


def train_reference_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    steps: int,
    batch_size: int = 64,
    seed: int = 0,
    learning_rate: float = 3e-3,
    device: str = "cpu",
) -> nn.Module:
    """Train a :class:`ReferenceCNN` on real images with Adam; return it in eval mode.

    Args:
        images: real uint8 images (N, H, W, C), values 0..255 (scaled to [0, 1] internally).
        labels: integer labels (N,), values in 0..num_classes-1.
        num_classes: number of classes K.
        steps: Adam steps; each draws ``batch_size`` images uniformly with replacement.
        batch_size: minibatch size.
        seed: seeds the weight initialisation (under a forked RNG: the caller's global torch RNG
            is untouched) and the module's own ``torch.Generator`` for the minibatches.
        learning_rate: Adam learning rate.
        device: torch device. On CPU the result is a deterministic function of the arguments.
    """
    _check_images(images, labels)
    labels = np.asarray(labels, dtype=np.int64)
    if images.shape[0] == 0:
        raise ValueError("no training images")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}; got {labels.min()}..{labels.max()}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps={steps} and batch_size={batch_size} must be >= 1")

    dev = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ReferenceCNN(images.shape[1:], num_classes)
    model.to(dev).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)

    x_all = torch.from_numpy(np.ascontiguousarray(images)).to(dev)  # uint8 (N, H, W, C)
    y_all = torch.from_numpy(labels).to(dev)
    for _ in range(steps):
        idx = torch.randint(0, x_all.shape[0], (batch_size,), generator=gen).to(dev)
        loss = nn.functional.cross_entropy(model(_to_input(x_all[idx], dev)), y_all[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def classify(model: nn.Module, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Predicted labels, int64 (N,), of images (N, H, W, C), uint8 0..255 or float32 on the [0, 1] scale;
    the model is left in eval mode."""
    _check_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    dev = next(model.parameters()).device
    model.eval()
    out = np.empty(images.shape[0], dtype=np.int64)
    for start in range(0, images.shape[0], batch_size):
        logits = model(_to_input(images[start : start + batch_size], dev))
        out[start : start + logits.shape[0]] = logits.argmax(dim=1).cpu().numpy()
    return out


def quality_report(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    min_agreement: float,
    max_imbalance: float,
    reference_accuracy: float | None = None,
    min_class_agreement: float | None = None,
) -> dict[str, Any]:
    """Measure a labelled (generated) pool against the gate; a JSON-serializable dict.

    Args:
        model: reference classifier trained on real images (:func:`train_reference_classifier`).
        images: uint8 (N, H, W, C) 0..255 or float32 on the [0, 1] scale; labels: int (N,) conditioning
            classes in 0..num_classes-1.
        num_classes: number of classes K.
        min_agreement: gate on ``agreement`` (fraction in [0, 1]).
        max_imbalance: gate on ``imbalance`` (relative deviation, e.g. 0.1 = +-10 %).
        reference_accuracy: the classifier's accuracy on the real test set, recorded so the reader
            can judge the agreement; if it is itself below ``min_agreement`` the gate is unpassable
            even for real images, which is reported as a failure (the classifier is too weak).
        min_class_agreement: optional gate on every class's agreement (None = off); catches a
            generator that fails for one class while the overall agreement looks fine.

    Returns keys: n_images, num_classes, agreement, per_class_agreement (list, None for an empty
    class), class_counts, predicted_class_counts, imbalance, reference_accuracy, chance_agreement,
    min_agreement, max_imbalance, min_class_agreement, passed, failures (list of str).
    """
    _check_images(images, labels)
    labels = np.asarray(labels, dtype=np.int64)
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes} must be >= 1")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}; got {labels.min()}..{labels.max()}")
    for name, value in (("min_agreement", min_agreement), ("min_class_agreement", min_class_agreement)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}={value} must lie in [0, 1]")
    if not max_imbalance >= 0.0:
        raise ValueError(f"max_imbalance={max_imbalance} must be >= 0")

    n = int(labels.shape[0])
    counts = np.bincount(labels, minlength=num_classes)
    failures: list[str] = []
    if n == 0:
        agreement, imbalance = 0.0, math.inf
        per_class: list[float | None] = [None] * num_classes
        predicted_counts = [0] * num_classes
        failures.append("the pool holds no images")
    else:
        pred = classify(model, images)
        hit = pred == labels
        agreement = float(hit.mean())
        per_class = [float(hit[labels == k].mean()) if counts[k] else None for k in range(num_classes)]
        predicted_counts = np.bincount(pred, minlength=num_classes)[:num_classes].tolist()
        expected = n / num_classes
        imbalance = float(np.abs(counts - expected).max() / expected)

        if agreement < min_agreement:
            failures.append(
                f"agreement {agreement:.2f} is below the gate {min_agreement:.2f}: the generator does not "
                f"produce its conditioning class (chance is {1 / num_classes:.2f})"
            )
        if min_class_agreement is not None:
            for k, a in enumerate(per_class):
                if a is not None and a < min_class_agreement:
                    failures.append(
                        f"class {k} agreement {a:.2f} is below the per-class gate "
                        f"{min_class_agreement:.2f}: the generator fails on class {k}"
                    )
        if imbalance > max_imbalance:
            for k, c in enumerate(counts.tolist()):
                if abs(c - expected) / expected > max_imbalance:
                    failures.append(f"class {k} has {c} images, expected {expected:g} +- {max_imbalance:.0%}")

    if reference_accuracy is not None and reference_accuracy < min_agreement:
        failures.append(
            f"the reference classifier's real test accuracy {reference_accuracy:.2f} is below the gate "
            f"{min_agreement:.2f}: even real images cannot pass; train the classifier longer or lower the gate"
        )
    return {
        "n_images": n,
        "num_classes": int(num_classes),
        "agreement": agreement,
        "per_class_agreement": per_class,
        "class_counts": counts.tolist(),
        "predicted_class_counts": predicted_counts,
        "imbalance": imbalance if math.isfinite(imbalance) else None,
        "reference_accuracy": None if reference_accuracy is None else float(reference_accuracy),
        "chance_agreement": 1.0 / num_classes,
        "min_agreement": float(min_agreement),
        "max_imbalance": float(max_imbalance),
        "min_class_agreement": None if min_class_agreement is None else float(min_class_agreement),
        "passed": not failures,
        "failures": failures,
    }


def check_quality(report: dict[str, Any]) -> None:
    """Raise :class:`QualityGateError` listing every failure reason unless ``report['passed']``."""
    if report.get("passed"):
        return
    reasons = report.get("failures") or ["the report is marked as not passed"]
    raise QualityGateError("generated pool failed the quality gate:\n" + "\n".join(f"  - {r}" for r in reasons))
