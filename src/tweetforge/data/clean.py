"""Cleaning rules, versioned: what a post's text becomes before training, and why a post is dropped.

The defaults are HuggingTweets': drop retweets, decode HTML entities, remove URLs, collapse
whitespace, drop posts of fewer than 3 words that are not links, @mentions or #hashtags. Every rule
runs vectorized over a whole Polars frame; every dropped post keeps the first reason that applies."""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field

import polars as pl

RULES_VERSION = "1"
"""Bump when a rule changes what it keeps or how it rewrites text: snapshots record it."""

DROP_REASONS = ("retweet", "reply", "language", "short", "duplicate")

URL_PATTERN = r"(?:https?://|www\.|pic\.twitter\.com/)\S+"
MENTION_PATTERN = r"@\w{1,50}"
LEADING_MENTIONS_PATTERN = r"^(?:\.?@\w{1,50}[\s,:]*)+"
WORD_PATTERN = r"(?:^|\s)[^\s@#]"
"""The start of a word that is not an @mention or a #hashtag (URLs are already removed)."""
ENTITY_PATTERN = r"&(?:#\d+|#x[0-9a-fA-F]+|[A-Za-z]\w*);?"


@dataclass(frozen=True)
class CleaningRules:
    drop_retweets: bool = True
    drop_replies: bool = False
    strip_reply_mentions: bool = False
    """Remove the '@a @b ' chain a reply starts with (what X prepends, not what the author wrote)."""
    mention_placeholder: str | None = None
    """Replace every @mention with this, e.g. '@user'."""
    keep_newlines: bool = False
    min_words: int = 3
    drop_duplicates: bool = True
    """Exact duplicates of an author's cleaned text. The copy imported first is kept (the earliest
    post within one import), so importing more never displaces a post an older snapshot kept."""
    languages: tuple[str, ...] = field(default_factory=tuple)
    """Keep only these language tags (as the source recorded them); untagged posts are kept."""

    def describe(self) -> dict:
        return {"version": RULES_VERSION, **asdict(self), "languages": list(self.languages)}


def clean_text(text: pl.Expr, rules: CleaningRules) -> pl.Expr:
    """The cleaned text of each post: entities decoded, URLs removed, mentions handled, whitespace collapsed."""
    decoded = text.map_batches(_decode_entities, return_dtype=pl.String, is_elementwise=True)
    out = decoded.str.replace_all(URL_PATTERN, " ")
    if rules.strip_reply_mentions:
        out = out.str.replace(LEADING_MENTIONS_PATTERN, "")
    if rules.mention_placeholder is not None:
        out = out.str.replace_all(MENTION_PATTERN, rules.mention_placeholder, literal=False)
    if rules.keep_newlines:
        out = (
            out.str.replace_all(r"\r\n?", "\n")
            .str.replace_all(r"[^\S\n]+", " ")
            .str.replace_all(r" ?\n ?", "\n")
            .str.replace_all(r"\n{3,}", "\n\n")
        )
    else:
        # every run of whitespace becomes one space; a run that is already one space is left alone,
        # which is the same result with far fewer replacements
        out = out.str.replace_all(r"\s{2,}|[^\S ]", " ")
    return out.str.strip_chars()


def _decode_entities(texts: pl.Series) -> pl.Series:
    """html.unescape of the texts with an entity; only those go through Python."""
    rows = texts.str.contains(ENTITY_PATTERN).arg_true()
    if rows.len() == 0:
        return texts
    return texts.clone().scatter(rows, [html.unescape(t) for t in texts.gather(rows).to_list()])


def clean(frame: pl.DataFrame, rules: CleaningRules) -> pl.DataFrame:
    """`frame` has the posts table's columns. Returns it with `text` cleaned, the original in
    `raw_text`, and `drop_reason` (null for kept posts)."""
    frame = frame.with_columns(pl.col("text").alias("raw_text"), clean_text(pl.col("text"), rules).alias("text"))
    is_reply = pl.col("reply_to").is_not_null()
    reason = pl.when(pl.lit(rules.drop_retweets) & pl.col("is_retweet")).then(pl.lit("retweet"))
    if rules.drop_replies:
        reason = reason.when(is_reply).then(pl.lit("reply"))
    if rules.languages:
        reason = reason.when(
            pl.col("language").is_not_null() & ~pl.col("language").is_in(list(rules.languages))
        ).then(pl.lit("language"))
    reason = reason.when(pl.col("text").str.count_matches(WORD_PATTERN) < rules.min_words).then(pl.lit("short"))
    frame = frame.with_columns(reason.otherwise(pl.lit(None, dtype=pl.String)).alias("drop_reason"))
    if rules.drop_duplicates:
        keys = [k for k in ("first_import_id", "created_at", "network", "post_id") if k in frame.columns]
        order = frame.with_row_index("_row").sort(keys, nulls_last=True)
        candidates = order.filter(pl.col("drop_reason").is_null())
        repeated = candidates.filter(~pl.struct("author", "text").is_first_distinct()).select("_row")
        frame = (
            frame.with_row_index("_row")
            .with_columns(
                pl.when(pl.col("_row").is_in(repeated["_row"].implode()))
                .then(pl.lit("duplicate"))
                .otherwise(pl.col("drop_reason"))
                .alias("drop_reason")
            )
            .drop("_row")
        )
    return frame


def cleaning_stats(cleaned: pl.DataFrame, refused_generated: dict[str, int] | None = None) -> list[dict]:
    """The HuggingTweets model-card table per author, extended. For each author
    downloaded = retweets + replies_dropped + other_language + short + duplicates + kept;
    `replies` counts every reply (kept or not) for information; `generated` counts the posts refused
    at import because tweetforge generated them (never stored, so outside `downloaded`)."""
    reason = pl.col("drop_reason")
    kept = reason.is_null()
    table = (
        cleaned.group_by("author")
        .agg(
            pl.len().alias("downloaded"),
            (reason == "retweet").sum().alias("retweets"),
            (pl.col("reply_to").is_not_null() & ~pl.col("is_retweet")).sum().alias("replies"),
            (reason == "reply").sum().alias("replies_dropped"),
            (reason == "language").sum().alias("other_language"),
            (reason == "short").sum().alias("short"),
            (reason == "duplicate").sum().alias("duplicates"),
            kept.sum().alias("kept"),
            pl.col("text").filter(kept).str.len_chars().sum().alias("characters_kept"),
            pl.col("created_at").min().alias("first"),
            pl.col("created_at").max().alias("last"),
        )
        .sort("downloaded", descending=True)
    )
    rows = table.to_dicts()
    for row in rows:
        for key in ("first", "last"):
            row[key] = row[key].isoformat() if row[key] is not None else None
        row["characters_kept"] = int(row["characters_kept"] or 0)
        row["generated"] = (refused_generated or {}).get(row["author"].lower(), 0)
    return rows


STATS_COLUMNS = [  # (cleaning_stats key, column label)
    ("downloaded", "posts"),
    ("retweets", "RT"),
    ("replies", "replies"),
    ("replies_dropped", "replies dropped"),
    ("other_language", "other lang."),
    ("short", "short"),
    ("duplicates", "dupes"),
    ("kept", "kept"),
    ("characters_kept", "chars kept"),
    ("generated", "generated by tweetforge"),
]
OPTIONAL_STATS = {"replies_dropped", "other_language", "generated"}
"""Shown only when a rule that fills them is on, so the table fits a terminal."""
