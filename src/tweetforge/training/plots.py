"""The training curve saved beside every version."""

from __future__ import annotations

from pathlib import Path

from tweetforge.plotting import pyplot, save


def plot_training_curve(history: list[dict], path: Path) -> Path:
    """Training and validation loss against step, from a run's evaluation history."""
    plt = pyplot()

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [h["train_loss"] for h in history], marker=".", label="training loss (batch)")
    ax.plot(steps, [h["val_loss"] for h in history], marker="o", label="validation loss")
    best = min(history, key=lambda h: h["val_loss"])
    ax.axvline(best["step"], color="grey", ls=":", lw=1, label=f"best: step {best['step']}")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("training curve")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)
