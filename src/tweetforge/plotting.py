"""What every plot shares: matplotlib, imported lazily (it is slow to load) on the file-only backend, and
the save-and-close tail. Each stage draws its own plots (data/plots.py, training/plots.py, …)."""

from __future__ import annotations

from pathlib import Path


def pyplot():  # type: ignore[no-untyped-def]
    """matplotlib.pyplot on the file-only backend (no display here, and none needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> Path:  # type: ignore[no-untyped-def]
    """Lay out, write as PNG (creating the folder) and free the figure."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path
