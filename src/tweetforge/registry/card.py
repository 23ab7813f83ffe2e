"""The model card (README.md beside the weights), HuggingTweets style. Everything in it is read from
the version it describes, so it is true for that model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tweetforge.artifacts import is_remote

if TYPE_CHECKING:
    from tweetforge.data.snapshots import Snapshot
    from tweetforge.registry.versions import ModelVersion

GENERATED_NOTICE = (
    "**Every text this model writes is machine-generated.** Label it as generated wherever you show it, "
    "and never present it as something {who} wrote or said."
)


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _directory(version: ModelVersion) -> str:
    return "DIRECTORY" if is_remote(version.location) else version.location


def model_card(version: ModelVersion, snapshot: Snapshot, history: list[dict], results: Sequence[str] = ()) -> str:
    """The card's markdown. results: the evaluation sections (markdown lines) the evaluation stage writes
    for each test split the version was evaluated on."""
    authors = version.params["authors"]
    who = ", ".join(f"@{a}" for a in authors)
    cleaning = snapshot.counts.get("cleaning", [])
    splits = snapshot.counts["splits"]
    params = version.params
    layers = f"the top {params['train_layers']} layers" if params.get("train_layers") else "every layer"
    mods = "attention and MLP projections" if params.get("lora_modules") == "attention+mlp" else "attention projections"
    lora = (f" (r={params['lora_r']}, alpha={params['lora_alpha']}, on the {mods} of {layers}, merged into the weights)"
            if params["method"] == "lora" else "")
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags:",
        "- tweetforge",
        "- huggingtweets",
        "- machine-generated-text",
        "---",
        "",
        f"# {version.name}:{version.version} — writes like {who}",
        "",
        "> " + GENERATED_NOTICE.format(who=who),
        "",
        f"A {version.kind} model trained with tweetforge on {who}'s posts.",
        "",
        "## Data",
        "",
        f"Dataset snapshot `{snapshot.name}` (content hash `{snapshot.content_hash[:16]}…`, cleaning rules v{snapshot.rules_version}).",
        "",
        "| author | downloaded | retweets | replies | short | duplicates | kept | characters kept |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in cleaning:
        lines.append(
            f"| @{row['author']} | {row['downloaded']:,} | {row['retweets']:,} | {row['replies']:,} | {row['short']:,} | "
            f"{row['duplicates']:,} | {row['kept']:,} | {row['characters_kept']:,} |"
        )
    lines += [
        "",
        "Posts used per split: " + ", ".join(f"{s} {sum(splits[s].values()):,}" for s in ("train", "validation", "test")) + ".",
        "The split is a hash of each post's id, so the test posts are never trained on, by this or any later version.",
        "",
        "## Training procedure",
        "",
        f"- Base: {version.base}",
        f"- Method: {version.params['method']}" + lora,
        f"- Posts packed with end-of-post separators into blocks of {version.params['block_size']} tokens, batch {version.params['batch_size']}, "
        f"{version.metrics['steps']:,} steps, {version.metrics['train_tokens']:,} tokens, "
        f"precision {version.params['precision']}, seed {version.params['seed']}",
        f"- Peak learning rate {version.params['learning_rate']:g}, warmup then cosine schedule, {version.params['epochs']:g} epochs planned; "
        f"{version.metrics['stopped_because']}",
        f"- Wall time {version.metrics['train_seconds']} s ({_num(version.metrics['tokens_per_second'], 1)} tokens/s) on CPU; run `{version.run_id}`",
    ]
    if adapter := params.get("adapter"):
        ranks = adapter["chain_ranks"]
        chain = f", its --from chain's ranks {'+'.join(map(str, ranks))} concatenated" if len(ranks) > 1 else ""
        lines.append(f"- The unmerged LoRA adapter (rank {adapter['rank']}{chain}, {adapter['bytes'] / 2**20:.1f} MiB) is in `adapter/`, "
                     f"for serving on a shared base (sha256 {adapter['base_sha256'][:12]}…)")
    if version.params.get("multi_author"):
        lines.append("- Multi-author: each post is preceded by an author control token " + ", ".join(f"`<|@{a.lower()}|>`" for a in authors))
    lines += [
        "",
        "## Results",
        "",
        "| metric | value |",
        "|---|---:|",
        f"| validation loss (nats/token, best) | {_num(version.metrics['val_loss'])} |",
        f"| validation perplexity | {_num(version.metrics['val_perplexity'], 2)} |",
        f"| best step | {_num(version.metrics['best_step'])} |",
        "",
    ]
    if history:
        lines += ["![training curve](training_curve.png)", ""]
    lines += results
    lines += [
        "## How to use",
        "",
        *([f"This version is stored at `{version.location}`; `tweetforge models pull {version.ref}` downloads it and prints "
           "the DIRECTORY to load.", ""] if is_remote(version.location) else []),
        "```python",
        "from transformers import pipeline",
        f"generator = pipeline('text-generation', model='{_directory(version)}')" if version.kind != "lstm" else
        f"import tweetforge.models.lstm  # registers the LSTM architecture\ngenerator = pipeline('text-generation', model='{_directory(version)}')",
        "generator('My dream is', num_return_sequences=5)",
        "```",
        "",
        "or `tweetforge generate " + f"{version.name}:{version.version}" + " --prompt \"My dream is\" -n 5`, which also starts each sample "
        "like a post (end-of-post token before the prompt) and cuts it at 280 characters on a word boundary.",
        "",
        "## Limitations and bias",
        "",
        f"The model reproduces the style, topics and biases of {who}'s posts, including any falsehoods, insults or "
        "offensive language in them, and it can copy training posts verbatim. It knows nothing after the last post it saw. "
        "It is a small model: expect fluent-looking nonsense. "
        + GENERATED_NOTICE.format(who=who),
        "",
    ]
    return "\n".join(lines)
