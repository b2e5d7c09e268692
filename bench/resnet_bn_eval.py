"""ResNet-18's test loss on BatchNorm's running statistics (the authors' ``model.eval()`` in
``test_model``, the trainer's since issue "ResNet-18 at test") against the loss on the test batch's
own statistics (the trainer's before; its test batch of 1000 held all 397 test digits).

A tiny ResNet-18 is trained online on scikit-learn's 8x8 digits at a few (gamma, eta), one seed,
float64, by ``gammasweep.sweep.train.train``; beside it the same run by hand, as the authors' code
does it: the network and a frozen copy of it (theta_0) in training mode, both normalizing on the
batch and updating their running statistics, SGD at lr = N eta on the centered MSE. At every eval
step (before update t) the hand run measures the test loss (MSE summed over the classes) and accuracy
both ways; its running-statistics loss must equal the trainer's, which the table checks.

The pool is the 1400 training digits: past 87 steps of 16 the stream starts a second epoch.

    python bench/resnet_bn_eval.py                    # width 4, 100 steps of 16, 3 cells: ~40 s on 2 cores
    python bench/resnet_bn_eval.py --steps 400 --cells 1:0.05 1:0.5 0.1:0.001 10:5

Results (docs/fidelity.md, "ResNet-18 at test"): on the running statistics the test loss is 4 to 280
times the batch-statistics one at step 1 (the running statistics are still 90 % their init, 0 and 1,
so the eval-mode network is far from normalized), within 20 % at step 20 and 9 % at steps 50-400.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from gammasweep.data.pools import write_images
from gammasweep.data.sources import fetch_sklearn_digits
from gammasweep.data.stream import OnlineStream, normalize
from gammasweep.results.curves import eval_steps
from gammasweep.sweep.losses import mse
from gammasweep.sweep.models import build_model
from gammasweep.sweep.parameterization import batch_statistics, centered_output, learning_rate
from gammasweep.sweep.train import Members, Setup, train

MEAN, STD = (0.3,), (0.4,)  # the default config's digits normalization


def hand_run(
    spec: dict, stream: OnlineStream, steps: int, gamma: float, eta: float, x_test: torch.Tensor, y_test: torch.Tensor
) -> dict[int, tuple[float, float, float, float]]:
    """Per eval step: test loss and accuracy on the running statistics, then on the test batch's statistics."""
    net, frozen = (build_model(spec, (8, 8, 1), 10, seeds=[0]).double() for _ in range(2))
    frozen.requires_grad_(False)
    lr = learning_rate(net.width, eta)

    def measured() -> tuple[float, float]:
        f = centered_output(net(x_test), frozen(x_test), gamma)[0]  # (P, classes)
        return 10 * mse(f[None], y_test)[0].item(), (f.argmax(-1) == y_test).double().mean().item()

    evals, out = set(eval_steps(steps).tolist()), {}
    for t in range(steps + 1):
        if t in evals:
            with torch.no_grad():
                net.eval(), frozen.eval()
                on_running = measured()
                with batch_statistics(net), batch_statistics(frozen):
                    on_batch = measured()
            out[t] = (*on_running, *on_batch)
        if t == steps:
            break
        net.train(), frozen.train()
        images, labels = stream.batch(t)
        x = normalize(images, MEAN, STD, torch.float64)
        net.zero_grad()
        mse(centered_output(net(x), frozen(x), gamma), labels).sum().backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= lr * p.grad
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--cells", nargs="+", default=["1:0.05", "0.1:0.001", "10:0.5"], help="gamma:eta pairs")
    args = parser.parse_args()
    torch.set_num_threads(1)

    spec = {"name": "resnet18", "width": args.width}
    (train_images, train_labels), (test_images, test_labels) = fetch_sklearn_digits(397, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        write_images(Path(tmp) / "pool.h5", train_images, train_labels)
        stream = OnlineStream(Path(tmp) / "pool.h5", args.batch, args.steps, data_seed=0, epochs=True)
    images, labels = torch.from_numpy(test_images), torch.from_numpy(test_labels)
    x_test = normalize(images, MEAN, STD, torch.float64)
    setup = Setup(
        model=spec,
        input_shape=(8, 8, 1),
        num_classes=10,
        loss="mse",
        steps=args.steps,
        mean=MEAN,
        std=STD,
        dtype=torch.float64,
        device=torch.device("cpu"),
        divergence_cap=float("inf"),
        record_points=10,
        test_batch_size=1000,
    )
    print(f"ResNet-18 width {args.width}, {args.steps} steps of {args.batch} digits, float64; test: 397 digits")
    print("gamma   eta     step  loss:running  loss:batch  acc:running  acc:batch  trainer/hand-1")
    for cell in args.cells:
        gamma, eta = map(float, cell.split(":"))
        curves = train(setup, Members([0], [gamma], [eta]), stream, images, labels, log=lambda m: None)
        by_hand = hand_run(spec, stream, args.steps, gamma, eta, x_test, labels)
        for column, step in enumerate(curves.eval_step.tolist()):
            loss_run, acc_run, loss_batch, acc_batch = by_hand[step]
            agree = curves.test_loss[0, column] / loss_run - 1 if loss_run else 0.0
            print(
                f"{gamma:<7g} {eta:<7g} {step:>4}  {loss_run:>12.4g}  {loss_batch:>10.4g}  "
                f"{acc_run:>11.3f}  {acc_batch:>9.3f}  {agree:>+14.1e}"
            )


if __name__ == "__main__":
    main()
