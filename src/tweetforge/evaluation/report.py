"""The one table of evaluation metrics: what each is called, how it is written and which way is better.
The command line's table, the model card, the comparison plot and the dashboard all read it, each
showing the subset that fits it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from tweetforge.evaluation.evaluate import Evaluation


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    format: str
    """A format spec: '.4f', '.1%' (a share shown as a percentage), ',' (a count)."""
    better: Literal["lower", "higher"] | None = None

    @property
    def title(self) -> str:
        arrow = {"lower": " ↓", "higher": " ↑", None: ""}[self.better]
        return self.label + arrow

    @property
    def percent(self) -> bool:
        return self.format.endswith("%")

    def show(self, value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "—"
        return format(value, self.format)


METRICS = {m.key: m for m in (
    Metric("test_posts", "test posts", ","),
    Metric("bits_per_char", "bits per char", ".4f", "lower"),
    Metric("token_perplexity", "token perplexity", ".2f"),
    Metric("distinct_1", "distinct-1", ".3f", "higher"),
    Metric("distinct_2", "distinct-2", ".3f", "higher"),
    Metric("self_bleu", "self-BLEU", ".1f", "lower"),
    Metric("length_chars_wasserstein", "length distance, chars", ".1f", "lower"),
    Metric("length_chars_ks", "length KS, chars", ".3f", "lower"),
    Metric("length_words_wasserstein", "length distance, words", ".2f", "lower"),
    Metric("mean_chars", "mean chars", ".0f"),
    Metric("ended_share", "ends properly", ".1%", "higher"),
    Metric("copy_rate", "copies (8 words or whole)", ".1%", "lower"),
    Metric("exact_copy_rate", "exact copies", ".1%", "lower"),
    Metric("copy_rate_filtered", "copies with filter", ".1%", "lower"),
    Metric("filter_dropped_share", "dropped by filter", ".1%", "lower"),
    Metric("detectability", "detectability (0.5 best)", ".3f"),
    Metric("attribution_accuracy", "author attribution", ".1%", "higher"),
)}

TABLE_METRICS = tuple(METRICS)
"""The command line's evaluation table: every metric."""
CARD_METRICS = ("bits_per_char", "token_perplexity", "distinct_2", "self_bleu", "length_chars_wasserstein", "ended_share", "copy_rate",
                "copy_rate_filtered", "detectability")
"""The model card's results table and the dashboard's comparison table."""
COMPARED_METRICS = ("bits_per_char", "distinct_2", "self_bleu", "length_chars_wasserstein", "ended_share", "copy_rate", "detectability")
"""A bar chart each in the comparison plot."""
HEADLINE_METRICS = ("bits_per_char", "token_perplexity", "distinct_1", "distinct_2", "self_bleu", "length_chars_wasserstein",
                    "length_words_wasserstein", "ended_share", "copy_rate", "exact_copy_rate", "copy_rate_filtered", "detectability",
                    "attribution_accuracy", "test_posts", "samples")
"""What an evaluation puts on its version's registry row."""


def same_tokenizer(metrics: dict[str, Any], reference: dict[str, Any]) -> bool:
    """Token perplexities compare only between models with the same vocabulary."""
    return metrics.get("tokenizer") == reference.get("tokenizer")


def cell(key: str, metrics: dict[str, Any], reference: dict[str, Any]) -> str:
    if key == "token_perplexity" and not same_tokenizer(metrics, reference):
        return "other tokenizer"
    return METRICS[key].show(metrics.get(key))


def card_section(evaluation: Evaluation, rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The model card's results for one test split: what was measured, and a row per subject (the
    version, then its baselines)."""
    settings = evaluation.settings
    reference = rows[0][1] if rows else {}
    lines = [
        f"### Test split of `{evaluation.dataset}` (evaluated {evaluation.created_at:%Y-%m-%d})",
        "",
        f"{evaluation.metrics['test_posts']:,} held-out posts for bits per character; {evaluation.metrics['samples']:,} generated posts "
        f"(seed {settings.seed}, temperature 1, top-p 0.95) for the rest. Copies: generated posts repeating 8 words in a row "
        "(or all) of a training post; with the filter they are re-drawn up to "
        f"{settings.max_redraws} times, then dropped. Detectability: cross-validated accuracy of a TF-IDF classifier telling "
        "generated from real test posts. The other rows are baselines on the same split (`tweetforge compare`).",
        "",
        "| model | " + " | ".join(METRICS[k].title for k in CARD_METRICS) + " |",
        "|---|" + "---:|" * len(CARD_METRICS),
    ]
    for label, metrics in rows:
        lines.append(f"| {label} | " + " | ".join(cell(k, metrics, reference) for k in CARD_METRICS) + " |")
    return [*lines, ""]
