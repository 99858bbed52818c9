"""Draw the loss per epoch of the tutorial networks (docs/img/loss_curves.png).

    python docs/plot_loss_curves.py [--output PATH] [--backend auto|numpy|cupy]

The networks are trained by nnback.demo, the functions ``python -m nnback demo`` runs and
that docs/tutorial.md checks its hand-written networks against, in float64 as the tutorial
trains them. Needs matplotlib (pip install 'nnback[docs]').
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout: use its nnback

from nnback import demo  # noqa: E402

DEFAULT_OUTPUT = ROOT / "docs" / "img" / "loss_curves.png"

# (panel, label, result of training); the label says the loss each curve is measured in
NETWORKS = [
    ("XOR", "2-2-1 without biases, lr 1 (SSE)",
     lambda backend: demo.xor_without_biases(backend, dtype="float64")),
    ("XOR", "2-3-1 with biases, lr 0.1 (SSE)",
     lambda backend: demo.xor_with_biases(backend, dtype="float64")),
    ("people and scores", "test scores, 2-3-1 (SSE)",
     lambda backend: demo.hours_studied(backend, dtype="float64")),
    ("people and scores", "weight/height, full batch (MSE)",
     lambda backend: demo.weight_height(backend, batch_size=None, dtype="float64")),
    ("people and scores", "weight/height, per sample (MSE)",
     lambda backend: demo.weight_height(backend, batch_size=1, dtype="float64")),
]


def loss_curves(backend="auto"):
    """{panel: [(label, loss per epoch), ...]} for the tutorial networks."""
    panels = {}
    for panel, label, train in NETWORKS:
        panels.setdefault(panel, []).append((label, train(backend)["history"].loss))
    return panels


def plot(panels, output):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), dpi=100)
    for axis, (title, curves) in zip(axes, panels.items()):
        for label, losses in curves:
            axis.plot(range(1, len(losses) + 1), losses, label=label)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("epoch")
        axis.set_ylabel("training loss")
        axis.set_title(title)
        axis.grid(True, which="major", alpha=0.3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    # no timestamp in the PNG, so that an unchanged figure makes an unchanged file
    figure.savefig(output, metadata={"Software": None})
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT),
                        help=f"where to write the PNG (default: {DEFAULT_OUTPUT})")
    parser.add_argument("--backend", default="auto", help="auto, numpy or cupy")
    args = parser.parse_args(argv)
    plot(loss_curves(args.backend), args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
