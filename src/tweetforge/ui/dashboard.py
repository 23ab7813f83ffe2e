"""What the web UI's dashboard and models tab show, as plain data and PNG files: the data (cleaning table,
posts per month, lengths), training curves, evaluation comparisons, experiments and the registry. Each
function returns an `empty` message naming the command to run when there is nothing to show yet."""

from __future__ import annotations

import html
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from tweetforge.registry.versions import ModelVersion


@dataclass
class View:
    rows: list[dict[str, Any]] = field(default_factory=list)
    plot: Path | None = None
    text: str = ""
    empty: str | None = None
    recent: list[dict[str, Any]] = field(default_factory=list)
    """The data view's latest stored posts (as text, whatever they contain)."""


def plot_to(directory: Path, name: str, draw: Callable[[Path], Any]) -> Path:
    """Draw into a temporary file and rename it into place, so a page never reads a half-written plot."""
    directory.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}-", suffix=".png")
    os.close(handle)
    try:
        draw(Path(temporary))
        os.replace(temporary, directory / f"{name}.png")
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return directory / f"{name}.png"


RECENT_POSTS = 20


def data_view(engine: Engine, plots: Path) -> View:
    """The default cleaning rules over every stored post: per author downloaded / retweets / short /
    duplicates / kept, and posts per month with the length histogram."""
    from tweetforge.data.clean import (
        STATS_COLUMNS,
        CleaningRules,
        clean,
        cleaning_stats,
    )
    from tweetforge.data.generated import refused_by_author
    from tweetforge.data.plots import plot_data_stats
    from tweetforge.data.store import read_posts

    with engine.connect() as conn:
        frame = read_posts(conn, None)
        refused_generated = refused_by_author(conn)
    if frame.height == 0:
        return View(empty="No posts stored yet. Import some: `tweetforge ingest example:trump` (or a CSV / X archive of your own).")
    from tweetforge.data.clean import OPTIONAL_STATS

    cleaned = clean(frame, CleaningRules())
    stats = cleaning_stats(cleaned, refused_generated)
    shown = [(k, label) for k, label in STATS_COLUMNS if k not in OPTIONAL_STATS or any(r[k] for r in stats)]
    rows = [{"author": f"@{r['author']}", **{label: r[key] for key, label in shown},
             "period": f"{(r['first'] or '?')[:4]}–{(r['last'] or '?')[:4]}"} for r in stats]
    latest = frame.sort("created_at", descending=True, nulls_last=True).head(RECENT_POSTS)
    recent = [{"author": f"@{r['author']}", "posted": str(r["created_at"] or "")[:16], "text": r["text"]} for r in latest.iter_rows(named=True)]
    return View(rows, plot_to(plots, "data", lambda path: plot_data_stats(cleaned, path)), recent=recent)


def versions(engine: Engine) -> list[ModelVersion]:
    from tweetforge.registry.versions import list_versions

    return sorted(list_versions(engine), key=lambda v: (v.name, -v.version))


NO_MODELS = "No models yet. Train one: `tweetforge train DATASET` (`make demo` does it all on the example data)."


def models_view(engine: Engine) -> View:
    from tweetforge.evaluation.report import METRICS

    shown = versions(engine)
    if not shown:
        return View(empty=NO_MODELS)
    rows = []
    for v in shown:
        m = v.metrics or {}
        tests = m.get("test") or {}
        test = tests.get(v.dataset) or next(iter(tests.values()), {})  # its own snapshot's test split first
        rows.append({"model": v.ref, "aliases": ", ".join(v.aliases), "kind": v.kind, "dataset": v.dataset,
                     "created": v.created_at.strftime("%Y-%m-%d %H:%M"), "val. perplexity": _number(m.get("val_perplexity")),
                     **{METRICS[key].title: METRICS[key].show(test.get(key)) for key in ("bits_per_char", "copy_rate", "detectability")}})
    return View(rows)


def model_card(version: ModelVersion) -> str:
    """The version's model card as Markdown, with HTML shown as text: it quotes generated and training posts."""
    card = version.path / "README.md"
    if not card.exists():
        return f"{version.ref} has no model card ({card} is missing)."
    text = card.read_text()
    if text.startswith("---\n"):  # YAML front matter: metadata for the hub, not for reading
        end = text.find("\n---\n", 4)
        text = text[end + 5:] if end > 0 else text
    text = re.sub(r"!\[[^\]]*\]\((?!https?:)[^)]*\)\n?", "", text)  # pictures beside the card: the dashboard shows the curve
    return html.escape(text, quote=False).replace("&gt;", ">")


def training_view(version: ModelVersion, plots: Path) -> View:
    """The curve saved with the version; drawn from its history when the file is missing."""
    from tweetforge.training.plots import plot_training_curve

    curve = version.path / "training_curve.png"
    if curve.exists():
        return View(plot=curve)
    import json

    info = json.loads((version.path / "tweetforge.json").read_text())
    if not info.get("history"):
        return View(empty=f"{version.ref} has no training history (it was registered without validation steps).")
    return View(plot=plot_to(plots, f"training-{version.name}-{version.version}", lambda p: plot_training_curve(info["history"], p)))


def evaluation_view(engine: Engine, version: ModelVersion, plots: Path) -> View:
    """The version's latest evaluation beside its baselines and the other versions of its name evaluated on
    the same test split with the same settings: a table and the comparison plot."""
    from tweetforge.data.snapshots import get_snapshot
    from tweetforge.evaluation.evaluate import (
        evaluated_alongside,
        evaluations_of,
        held_out_posts,
    )
    from tweetforge.evaluation.plots import plot_comparison
    from tweetforge.evaluation.report import CARD_METRICS, METRICS, cell

    mine = evaluations_of(engine, version.ref)
    if not mine:
        return View(empty=f"{version.ref} is not evaluated yet: `tweetforge evaluate {version.ref}` "
                          f"(or compare: `tweetforge compare {version.ref} markov base`).")
    evaluation = mine[-1]
    others = [v.ref for v in versions(engine) if v.name == version.name and v.ref != version.ref]
    compared = [evaluation, *evaluated_alongside(engine, version, evaluation, others)]
    rows = [{"model": e.subject, **{METRICS[key].title: cell(key, e.metrics, evaluation.metrics) for key in CARD_METRICS}}
            for e in compared]
    snapshot = get_snapshot(engine, evaluation.dataset)
    authors = version.params.get("authors") or None
    real = held_out_posts(snapshot, authors, evaluation.settings.max_test_posts)[0] if authors else []
    plot = plot_to(plots, f"evaluation-{version.name}-{version.version}", lambda p: plot_comparison(compared, real, p))
    return View(rows, plot, text=f"Test split of {evaluation.dataset}: {evaluation.metrics.get('test_posts', 0):,} real posts, "
                                 f"{evaluation.metrics.get('samples', 0):,} generated per model (seed {evaluation.settings.seed}).")


START_EXPERIMENT = ("Start one between two versions: `tweetforge ab create NAME --variant a=MODEL:1:50 "
                    "--variant b=MODEL:2:50 --metric like` (or `--metric arena` for pairwise votes in the Arena tab).")
NO_EXPERIMENTS = f"No experiment yet. {START_EXPERIMENT}"
NO_RUNNING_EXPERIMENT = f"No experiment is running. {START_EXPERIMENT}"


def experiment_names(engine: Engine, running_only: bool = False) -> list[str]:
    from tweetforge.experiments.ab import list_experiments

    return [e.name for e in list_experiments(engine) if e.status == "running" or not running_only]


def experiment_view(engine: Engine, name: str, plots: Path) -> View:
    """Each variant's rate with its 95% interval and P(best), the decision state, and the rates over time."""
    from tweetforge.experiments.ab import experiment_status
    from tweetforge.experiments.plots import plot_experiment

    status = experiment_status(engine, name)
    what = "win rate" if status.experiment.metric == "arena" else f"{status.experiment.metric} rate"
    rows = [{"variant": r.variant, "model": r.model, "exposures": r.exposures, "conversions": r.conversions,
             what: _percent(r.rate), "95% interval": f"{_percent(r.low)} – {_percent(r.high)}", "P(best)": _percent(r.p_best)}
            for r in status.results]
    winner = f", winner **{status.winner}**" if status.winner else ""
    text = (f"**{status.experiment.name}** ({status.experiment.status}): **{status.state}**{winner}. {status.reason} "
            f"Always-valid p = {status.always_valid_p:.3g} (alpha {status.experiment.alpha:g}).")
    return View(rows, plot_to(plots, f"experiment-{name}", lambda p: plot_experiment(status, p)), html.escape(text, quote=False))


def _number(value: Any, scale: float = 1) -> str:
    return "—" if value is None else f"{value * scale:.4g}"


def _percent(value: Any) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


NO_PIPELINE = "No pipeline cycle yet. Run one: `tweetforge watch --once` (or `tweetforge watch --every 15m`)."


def pipeline_view(engine: Engine, plots: Path) -> View:
    """The watch cycles: a timeline of their steps and a table of the newest ones."""
    from tweetforge.pipeline.plots import plot_pipeline_history
    from tweetforge.pipeline.watch import describe_numbers, pipeline_history

    history = pipeline_history(engine, 100)
    if not history:
        return View(empty=NO_PIPELINE)
    rows = []
    for cycle in history[:20]:
        for step in cycle["steps"]:
            rows.append({"cycle": cycle["id"], "started (UTC)": f"{step['started_at']:%Y-%m-%d %H:%M:%S}", "step": step["step"],
                         "model": step["model_name"] or "", "outcome": step["outcome"],
                         "numbers": describe_numbers(step["numbers"]), "error": step["error"] or ""})
    return View(rows, plot_to(plots, "pipeline", lambda p: plot_pipeline_history(history, p)))
