"""The loss curve of a training run as a PNG."""

from __future__ import annotations

from pathlib import Path


def plot_loss_curve(log_history: list[dict], path: Path, title: str) -> None:
    """Training loss per logged step (and eval loss if any) from a Trainer's ``state.log_history``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e]
    if not train:
        raise ValueError("the run logged no loss: train for more steps than --logging-steps")
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(*zip(*train), label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
