"""Cell-steps per second of the packed trainer against a per-cell baseline in the paper's style.

Baseline (as the authors' code trains a cell): one nn.Module per cell, a frozen deep copy of its
initial weights evaluated every step for the centering, ``torch.optim.SGD``, the test set
evaluated at the same log-spaced steps, cells one after another. Packed: ``gammasweep.sweep.train.train``
on all K cells at once (shared batch, one GEMM per layer, the frozen network once per distinct
seed), with its loss records. Both run in this process on the same data, best of three
interleaved runs after a warm-up; the ratio is what counts. A "cell" here is one (gamma, eta, seed) network.
With ``--peak`` the packed run's FLOPs are counted (``torch.utils.flop_counter``) and its FLOP/s read against
a large float32 matrix product's on the same device: FP32, and on a GPU with TF32 tensor cores allowed (the
trainer's matrix products are FP32: PyTorch leaves TF32 off for them by default).

    python bench/packed_cells.py               # the table of bench/README.md (a few minutes on 2 cores)
    python bench/packed_cells.py --quick       # the target case only: MLP width 128, K = 32
    python bench/packed_cells.py --inputs 28x28x1 --widths 512 --cnn --sizes 64 --steps 500 --packed-only --peak
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from gammasweep.data.pools import write_images
from gammasweep.data.stream import OnlineStream
from gammasweep.results.provenance import device_name
from gammasweep.sweep.losses import mse
from gammasweep.sweep.models import build_model
from gammasweep.sweep.parameterization import centered_output, learning_rate
from gammasweep.sweep.train import Members, Setup, eval_steps, train

BATCH, CLASSES = 128, 10


def members(k: int) -> Members:
    """K cells: gamma in {0.1, 1, 10}, eta = 1e-3 (stable: nothing diverges), seeds 0 and 1."""
    return Members(seeds=[c % 2 for c in range(k)], gammas=[(0.1, 1.0, 10.0)[c % 3] for c in range(k)], etas=[1e-3] * k)


def baseline(
    spec: dict,
    shape: tuple[int, int, int],
    cells: Members,
    stream: OnlineStream,
    steps: int,
    test: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
) -> None:
    """The paper-style loop: each cell its own module, frozen copy and optimizer, one after another."""
    x_test, y_test = test[0].to(device, torch.float32) / 255.0, test[1].to(device)
    evals = set(eval_steps(steps).tolist())
    for seed, gamma, eta in zip(cells.seeds, cells.gammas, cells.etas):
        net = build_model(spec, shape, CLASSES, seeds=[seed]).to(device)
        frozen = copy.deepcopy(net).requires_grad_(False)
        optimizer = torch.optim.SGD(net.parameters(), lr=learning_rate(net.width, eta))
        for t in range(steps + 1):
            if t in evals:
                with torch.no_grad():
                    f = centered_output(net(x_test), frozen(x_test), gamma)
                    mse(f, y_test).item(), (f.argmax(-1) == y_test).float().mean().item()
            if t == steps:
                break
            images, labels = stream.batch(t)
            x, y = images.to(device, torch.float32) / 255.0, labels.to(device)
            optimizer.zero_grad()
            mse(centered_output(net(x), frozen(x), gamma), y).sum().backward()
            optimizer.step()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a GPU's kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def gemm_rate(device: torch.device, tf32: bool) -> float:
    """FLOP/s of a large float32 matrix product on ``device``, with TF32 tensor cores allowed or not: the
    device's attainable peak, which the packed trainer's rate is read against."""
    n, reps = (8192, 20) if device.type == "cuda" else (1024, 5)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    allowed = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        a @ b  # warm-up
        synchronize(device)
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        synchronize(device)
        return 2 * n**3 * reps / (time.perf_counter() - start)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allowed


def flops(run: Callable[[], object]) -> int:
    """Floating-point operations of one call of ``run`` (matrix products and convolutions)."""
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def measure(
    spec: dict,
    shape: tuple[int, int, int],
    k: int,
    steps: int,
    pool: Path,
    device: torch.device,
    baseline_too: bool = True,
    count_flops: bool = False,
) -> dict[str, float]:
    """Best-of-three cell-steps/s of the packed trainer (and of the baseline), and with ``count_flops`` the
    packed run's FLOP/s at that rate ("packed_flops")."""
    stream = OnlineStream(pool, BATCH, steps, data_seed=0)
    test = torch.randint(0, 256, (256, *shape), dtype=torch.uint8), torch.randint(0, CLASSES, (256,))
    setup = Setup(
        model=spec,
        input_shape=shape,
        num_classes=CLASSES,
        loss="mse",
        steps=steps,
        mean=(0.5,),
        std=(0.25,),
        dtype=torch.float32,
        device=device,
        divergence_cap=1e4,
        record_points=10,
        test_batch_size=256,
    )
    cells = members(k)
    runs = {
        "baseline": lambda: baseline(spec, shape, cells, stream, steps, test, device),
        "packed": lambda: train(setup, cells, stream, *test, log=lambda m: None),
    }
    if not baseline_too:
        del runs["baseline"]
    rates = {}
    for run in runs.values():
        run()  # warm-up (allocator, kernels, caches)
    for _ in range(3):  # interleaved, best of three: this machine's speed drifts
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            synchronize(device)
            rates[name] = max(rates.get(name, 0.0), k * steps / (time.perf_counter() - start))
    if count_flops:
        rates["packed_flops"] = flops(runs["packed"]) * rates["packed"] / (k * steps)
    return rates


def shape_arg(text: str) -> tuple[int, int, int]:
    """'28x28x1' -> (28, 28, 1)."""
    height, width, channels = (int(n) for n in text.split("x"))
    return height, width, channels


def table_row(spec: dict, shape: tuple[int, int, int], k: int, rates: dict, gemm: dict[str, float]) -> dict[str, str]:
    """The printed columns of one measurement, those it has: the baseline's and the ratio, the FLOP/s."""
    name = ", ".join(f"{key} {value}" for key, value in spec.items() if key != "name")
    row = {"model": f"{spec['name']} ({name})", "input": "x".join(map(str, shape)), "K": str(k)}
    if "baseline" in rates:
        row["baseline cell-steps/s"] = f"{rates['baseline']:.0f}"
    row["packed cell-steps/s"] = f"{rates['packed']:.0f}"
    if "baseline" in rates:
        row["ratio"] = f"{rates['packed'] / rates['baseline']:.2f}"
    if "packed_flops" in rates:
        row["packed TFLOP/s"] = f"{rates['packed_flops'] / 1e12:.3f}"
        row |= {f"of {kind.upper()} GEMM": f"{rates['packed_flops'] / rate:.3f}" for kind, rate in gemm.items()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the target case only (MLP width 128, K = 32)")
    parser.add_argument("--steps", type=int, default=20, help="SGD steps per cell per measurement")
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 512, 1024], help="MLP widths (depth 3)")
    parser.add_argument(
        "--inputs", type=shape_arg, nargs="+", default=[(8, 8, 1), (28, 28, 1)], help="MLP inputs, e.g. 28x28x1"
    )
    parser.add_argument("--cnn", type=int, nargs="*", default=[16], help="CNN widths on 28x28x1 (none: no CNN)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32], help="cells per pack, K")
    parser.add_argument("--packed-only", action="store_true", help="the packed trainer alone, no baseline")
    parser.add_argument("--peak", action="store_true", help="the packed run's FLOP/s against a float32 GEMM's")
    parser.add_argument("--json", type=Path, help="also write the device, the GEMM rates and the rows here")
    args = parser.parse_args()
    if args.quick:
        args.widths, args.inputs, args.cnn, args.sizes = [128], [(8, 8, 1)], [], [32]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cases = [({"name": "mlp", "width": w, "depth": 3}, shape) for shape in args.inputs for w in args.widths]
    cases += [({"name": "cnn", "width": w}, (28, 28, 1)) for w in args.cnn]
    tf32 = device.type == "cuda"  # TF32 tensor cores: a GPU's
    gemm = {kind: gemm_rate(device, kind == "tf32") for kind in ("fp32", "tf32")[: 1 + tf32]} if args.peak else {}
    print(
        f"device: {device_name(device)}; torch {torch.__version__}, threads {torch.get_num_threads()}; batch {BATCH}; "
        f"{args.steps} steps; float32"
        + "".join(f"; {kind.upper()} GEMM {rate / 1e12:.2f} TFLOP/s" for kind, rate in gemm.items())
        + "\n"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec, shape in cases:
            pool = Path(tmp) / f"pool_{'x'.join(map(str, shape))}.h5"
            if not pool.exists():
                rng = np.random.default_rng(0)
                images = rng.integers(0, 256, (BATCH * args.steps, *shape), dtype=np.uint8)
                write_images(pool, images, rng.integers(0, CLASSES, len(images)))
            for k in args.sizes:
                rates = measure(spec, shape, k, args.steps, pool, device, not args.packed_only, args.peak)
                row = table_row(spec, shape, k, rates, gemm)
                if not rows:
                    print(f"| {' | '.join(row)} |\n|{'---|' * len(row)}")
                print(f"| {' | '.join(row.values())} |", flush=True)
                rows.append({"model": spec, "input": list(shape), "k": k, **rates})
    if args.json:
        summary = {"device": device_name(device), "torch": torch.__version__, "threads": torch.get_num_threads()}
        summary |= {"batch": BATCH, "steps": args.steps, "gemm_flops": gemm, "rows": rows}
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
