"""The pipeline's history as a timeline: one lane per step, a bar per run coloured by its outcome, and
the challenger's bits per char against the champion's at every gate."""

from __future__ import annotations

from pathlib import Path

from tweetforge.plotting import pyplot, save

LANES = ["sync", "inbox", "snapshot", "train", "gate"]
COLOURS = {"ok": "#2e7d32", "promoted": "#1565c0", "experiment": "#6a1b9a", "refused": "#ef6c00", "skipped": "#bdbdbd",
           "failed": "#c62828", "killed": "#000000", "running": "#fdd835", "stopped": "#757575"}


def plot_pipeline_history(history: list[dict], path: Path) -> Path:
    """history: pipeline_history() (newest cycle first)."""
    plt = pyplot()
    from matplotlib.dates import date2num
    from matplotlib.patches import Patch

    steps = [s for cycle in history for s in cycle["steps"] if s["step"] in LANES]
    gates = sorted((s for s in steps if s["step"] == "gate" and s["numbers"].get("challenger_bits_per_char")), key=lambda s: s["started_at"])
    fig, (lanes, quality) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    seen = set()
    for step in steps:
        start = date2num(step["started_at"])
        end = date2num(step["finished_at"] or step["started_at"])
        width = max(end - start, 1 / 86400)  # at least a second, so quick steps show
        lanes.barh(LANES.index(step["step"]), width, left=start, color=COLOURS.get(step["outcome"], "#9e9e9e"), height=0.6)
        seen.add(step["outcome"])
    lanes.set_yticks(range(len(LANES)), LANES)
    lanes.invert_yaxis()
    lanes.set_title(f"pipeline: {len(history)} cycles, {sum(c['outcome'] == 'failed' for c in history)} failed")
    lanes.legend(handles=[Patch(color=COLOURS[o], label=o) for o in COLOURS if o in seen], fontsize=8, loc="upper left", ncols=4)
    lanes.grid(axis="x", alpha=0.3)
    if gates:
        at = [s["started_at"] for s in gates]
        quality.plot(at, [s["numbers"]["challenger_bits_per_char"] for s in gates], "o-", label="challenger")
        quality.plot(at, [s["numbers"].get("champion_bits_per_char") for s in gates], "s--", label="champion")
        for s in gates:
            quality.annotate(s["outcome"], (s["started_at"], s["numbers"]["challenger_bits_per_char"]), fontsize=7,
                             textcoords="offset points", xytext=(0, 6), ha="center")
        quality.legend(fontsize=8)
    else:
        quality.text(0.5, 0.5, "no gate yet", ha="center", va="center", transform=quality.transAxes, color="#757575")
    quality.set_ylabel("test bits per char")
    quality.grid(alpha=0.3)
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator()
    quality.xaxis.set_major_locator(locator)
    quality.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    quality.set_xlabel("UTC")
    return save(fig, path)
