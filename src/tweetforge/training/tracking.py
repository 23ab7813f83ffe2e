"""Experiment tracking: trackio by default (local SQLite under the data home, offline dashboard with
`trackio show`), wandb for users with an account, or none."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

from tweetforge.errors import TweetforgeError

REPORT_TO = ("trackio", "wandb", "none")
PROJECT = "tweetforge"


class TrackingError(TweetforgeError):
    """A tracker that cannot be used as asked."""


class Tracker:
    def __init__(self, report_to: str, home: Path, run_name: str, config: dict[str, Any], resume: bool = False):
        if report_to not in REPORT_TO:
            raise TrackingError(f"--report-to {report_to!r}: use one of {', '.join(REPORT_TO)}")
        self.report_to = report_to
        self._backend: Any = None
        if report_to == "trackio":
            os.environ.setdefault("TRACKIO_DIR", str(home / "trackio"))
            import trackio

            with quiet():  # trackio prints banners; the progress bar owns the terminal
                trackio.init(project=PROJECT, name=run_name, config=config, resume="allow" if resume else "never",
                             embed=False, auto_log_cpu=False)
            self._backend = trackio
        elif report_to == "wandb":
            try:
                import wandb
            except ImportError:
                raise TrackingError("--report-to wandb needs the wandb package: pip install wandb") from None
            wandb.init(project=PROJECT, name=run_name, id=run_name, config=config, resume="allow" if resume else None)
            self._backend = wandb

    @property
    def location(self) -> str:
        if self.report_to == "trackio":
            return f"trackio (TRACKIO_DIR={os.environ['TRACKIO_DIR']}; view with: trackio show --project {PROJECT})"
        return self.report_to

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self._backend is not None:
            self._backend.log(metrics, step=step)

    def finish(self) -> None:
        if self._backend is not None:
            with quiet():
                self._backend.finish()
            self._backend = None


def quiet():
    return contextlib.redirect_stdout(io.StringIO())
