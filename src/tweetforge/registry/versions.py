"""The model registry: every trained model is a numbered version of a name, stored as a Hugging Face
directory (`<home>/models/<name>/<version>/`) with a model card, plus a database row; aliases such
as `champion` and `challenger` point at versions."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, Row, delete, func, insert, select, update

from tweetforge.artifacts import cache_root, is_remote, join, keep_as_cached, local_directory, publish_version, upload_content, write_document
from tweetforge.db.engine import writing
from tweetforge.db.schema import model_aliases, model_versions
from tweetforge.errors import TweetforgeError
from tweetforge.files import replace_directory, staging_directory
from tweetforge.registry.adapters import ADAPTER_DIR, save_adapter

if TYPE_CHECKING:
    from tweetforge.data.snapshots import Snapshot
    from tweetforge.training.train import TrainResult

ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


class RegistryError(TweetforgeError):
    """A model reference that does not resolve, or an alias that cannot be set."""


@dataclass
class ModelVersion:
    name: str
    version: int
    kind: str
    location: str
    """Its directory, or the URL of its copy under TWEETFORGE_ARTIFACTS."""
    base: str
    dataset: str
    dataset_hash: str
    run_id: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    created_at: datetime
    aliases: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        """The version's directory on this machine (a remote one is downloaded into the cache on first use)."""
        return local_directory(self.location)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def summary(self) -> dict[str, Any]:
        return {
            "ref": self.ref, "name": self.name, "version": self.version, "kind": self.kind, "path": self.location,
            "base": self.base, "dataset": self.dataset, "dataset_hash": self.dataset_hash, "run_id": self.run_id,
            "params": self.params, "metrics": self.metrics, "created_at": self.created_at.isoformat(), "aliases": self.aliases,
        }


def parse_ref(ref: str) -> tuple[str, str | None]:
    name, _, selector = ref.partition(":")
    if not name:
        raise RegistryError(f"model reference {ref!r}: use NAME, NAME:VERSION or NAME:ALIAS")
    return name, selector or None


def _aliases(conn: Connection, name: str) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for alias, version in conn.execute(select(model_aliases.c.alias, model_aliases.c.version).where(model_aliases.c.name == name)):
        found.setdefault(version, []).append(alias)
    return found


def _version(row: Row, aliases: dict[int, list[str]]) -> ModelVersion:
    return ModelVersion(
        name=row.name, version=row.version, kind=row.kind, location=row.path, base=row.base, dataset=row.dataset,
        dataset_hash=row.dataset_hash, run_id=row.run_id, params=row.params, metrics=row.metrics,
        created_at=row.created_at, aliases=sorted(aliases.get(row.version, [])),
    )


def list_versions(engine: Engine, name: str | None = None) -> list[ModelVersion]:
    with engine.connect() as conn:
        query = select(model_versions).order_by(model_versions.c.name, model_versions.c.version)
        if name:
            query = query.where(model_versions.c.name == name)
        rows = conn.execute(query).all()
        aliases = {n: _aliases(conn, n) for n in {r.name for r in rows}}
    return [_version(r, aliases[r.name]) for r in rows]


def resolve(engine: Engine, ref: str) -> ModelVersion:
    """NAME (its champion, else its latest version), NAME:VERSION, or NAME:ALIAS."""
    name, selector = parse_ref(ref)
    versions = list_versions(engine, name)
    if not versions:
        known = sorted({v.name for v in list_versions(engine)})
        hint = f" (models: {', '.join(known)})" if known else " (none yet: tweetforge train DATASET)"
        raise RegistryError(f"no model named {name!r}{hint}")
    if selector is None:
        champion = [v for v in versions if "champion" in v.aliases]
        return champion[0] if champion else versions[-1]
    if selector.isascii() and selector.isdigit():  # str.isdigit alone takes '²', which int() refuses
        for v in versions:
            if v.version == int(selector):
                return v
        raise RegistryError(f"{name} has no version {selector} (versions: {', '.join(str(v.version) for v in versions)})")
    for v in versions:
        if selector in v.aliases:
            return v
    raise RegistryError(f"{name} has no alias {selector!r}")


def set_alias(engine: Engine, ref: str, alias: str) -> ModelVersion:
    if not ALIAS_PATTERN.match(alias):
        raise RegistryError(f"alias {alias!r}: lower-case letters, digits, '-' and '_', starting with a letter")
    if alias.isdigit():
        raise RegistryError("an alias cannot be a number")
    target = resolve(engine, ref)
    with writing(engine) as conn:
        point_alias(conn, target.name, alias, target.version)
    return resolve(engine, f"{target.name}:{target.version}")


def point_alias(conn: Connection, name: str, alias: str, version: int) -> None:
    conn.execute(delete(model_aliases).where(model_aliases.c.name == name, model_aliases.c.alias == alias))
    conn.execute(insert(model_aliases).values(name=name, alias=alias, version=version, updated_at=datetime.now()))


def generation_defaults(tokenizer: Any, max_post_tokens: int) -> dict[str, Any]:
    """Tweet defaults for generation_config.json: sample with top-p 0.95, stop at end-of-post, and allow
    as many new tokens as the longest training post of at most 280 characters needed (+ a margin)."""
    return {
        "do_sample": True,
        "top_p": 0.95,
        "temperature": 1.0,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        "bos_token_id": tokenizer.eos_token_id,
        "max_new_tokens": max_post_tokens + 8,
    }


def is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def parent_adapter(engine: Engine, from_model: str | None) -> tuple[Path, dict[str, Any]] | None:
    """The version a run continued, when it has an adapter: the new adapter is stored on top of it."""
    if not from_model:
        return None
    parent = resolve(engine, from_model)
    return (parent.path, parent.params["adapter"]) if parent.params.get("adapter") else None


def register(engine: Engine, models_dir: Path | str, result: TrainResult, snapshot: Snapshot) -> ModelVersion:
    """Export a finished run as the next version of its name: merged weights (safetensors), tokenizer,
    generation config, metadata and a model card, written beside and renamed into place once the row is in.
    A LoRA run also keeps its unmerged adapter (registry/adapters.py) for serving on a shared base.
    models_dir may be a URL (TWEETFORGE_ARTIFACTS): the content is uploaded under its tree hash first, the
    version's documents and marker once its number is taken, and the row committed last (artifacts.py)."""
    from transformers import GenerationConfig

    from tweetforge.registry.card import model_card
    from tweetforge.training.models.causal_lm import unwrap_for_export
    from tweetforge.training.plots import plot_training_curve

    config = result.config
    name = config.model_name
    remote = is_remote(models_dir)
    staging = staging_directory(cache_root() if remote else Path(models_dir), name)
    try:
        adapter = save_adapter(result.model, staging / ADAPTER_DIR, parent_adapter(engine, config.from_model)) if is_peft(result.model) else None
        model = unwrap_for_export(result.model)
        tokenizer = result.tokenizer
        defaults = generation_defaults(tokenizer, result.max_post_tokens)
        model.generation_config = GenerationConfig(**defaults)
        model.config.eos_token_id = tokenizer.eos_token_id
        model.config.pad_token_id = defaults["pad_token_id"]
        state = result.state
        best_val = state.best_val_loss if state.history else None
        metrics = {
            "val_loss": best_val,
            "val_perplexity": (2.718281828459045 ** best_val) if best_val is not None else None,
            "best_step": state.best_step,
            "steps": state.step,
            "train_tokens": state.tokens,
            "train_seconds": round(state.seconds, 1),
            "tokens_per_second": round(state.tokens / state.seconds, 1) if state.seconds else None,
            "stopped_because": state.stopped_because,
        }
        from tweetforge.training.train import DEFAULT_LEARNING_RATE

        params = {
            "method": config.method, "block_size": config.block_size, "batch_size": config.batch_size, "epochs": config.epochs,
            "max_steps": config.max_steps, "learning_rate": config.learning_rate or DEFAULT_LEARNING_RATE[config.method],
            "lora_r": config.lora_r if config.method == "lora" else None,
            "lora_alpha": config.lora_alpha if config.method == "lora" else None,
            "train_layers": config.train_layers if config.method == "lora" else None,
            "lora_modules": config.lora_modules if config.method == "lora" else None, "seed": config.seed,
            "precision": "bf16 autocast" if result.bf16 else "fp32",
            "layers": config.layers if config.kind != "pretrained" else None, "width": config.width if config.kind != "pretrained" else None,
            "authors": result.authors, "multi_author": result.multi_author, "from_model": config.from_model,
            "untuned_base": config.base if config.kind == "pretrained" and not config.from_model else None,
            "parameters": sum(p.numel() for p in model.parameters()), "adapter": adapter,
        }
        kind = "lstm" if config.kind == "lstm" else ("scratch" if config.kind == "scratch" else "causal-lm")
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        build_copy_index(snapshot, staging)
        history = state.history
        if history:
            plot_training_curve(history, staging / "training_curve.png")
        content = upload_content(staging, join(str(models_dir), name, "content"))[1] if remote else None
        with writing(engine) as conn:
            version = (conn.execute(select(func.max(model_versions.c.version)).where(model_versions.c.name == name)).scalar() or 0) + 1
            final = join(str(models_dir), name, str(version)) if remote else str(Path(models_dir) / name / str(version))
            entry = ModelVersion(
                name=name, version=version, kind=kind, location=final, base=result.base_description, dataset=snapshot.name,
                dataset_hash=snapshot.content_hash, run_id=result.run_id, params=params, metrics=metrics, created_at=datetime.now(),
            )
            info = {**entry.summary(), "history": history, "generation": defaults}
            (staging / "tweetforge.json").write_text(json.dumps(info, indent=2, default=str))
            (staging / "README.md").write_text(model_card(entry, snapshot, history))
            conn.execute(insert(model_versions).values(
                name=name, version=version, kind=kind, path=final, base=entry.base, dataset=entry.dataset,
                dataset_hash=entry.dataset_hash, run_id=entry.run_id, params=params, metrics=metrics, created_at=entry.created_at,
            ))
            if content is not None:
                keep = publish_version(final, content, staging)
            else:  # the version's row is ours now: a folder there is a killed process's leftover
                replace_directory(staging, Path(final))
        if content is not None:
            keep_as_cached(staging, final, keep)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return entry


def build_copy_index(snapshot: Snapshot, version_dir: Path) -> Path:
    """The copy index of the snapshot's train split (what the version was trained on), in its directory."""
    from tweetforge.data.snapshots import training_texts
    from tweetforge.registry.copy_index import CopyIndex

    texts, _ = training_texts(snapshot)
    source = {"dataset": snapshot.name, "dataset_hash": snapshot.content_hash, "split": "train"}
    return CopyIndex.build(texts).save(version_dir / "copy_index", source)


def ensure_copy_index(engine: Engine, version: ModelVersion) -> Path:
    """Versions registered before copy indexes existed get theirs built on first use."""
    from tweetforge.data.snapshots import get_snapshot

    directory = version.path / "copy_index"
    if (directory / "index.json").exists():
        return directory
    return build_copy_index(get_snapshot(engine, version.dataset), version.path)


def update_metrics(engine: Engine, version: ModelVersion, change: Callable[[dict[str, Any]], dict[str, Any]]) -> ModelVersion:
    """Change a version's metrics in one transaction (read, change, write), and in its tweetforge.json."""
    where = (model_versions.c.name == version.name, model_versions.c.version == version.version)
    with writing(engine) as conn:
        metrics = change(dict(conn.execute(select(model_versions.c.metrics).where(*where)).scalar_one()))
        conn.execute(update(model_versions).where(*where).values(metrics=metrics))
    updated = resolve(engine, version.ref)
    info = json.loads((version.path / "tweetforge.json").read_text())
    info.update({"metrics": updated.metrics})
    write_document(version.location, "tweetforge.json", json.dumps(info, indent=2, default=str))
    return updated


def rewrite_card(engine: Engine, version: ModelVersion, results: list[str]) -> None:
    """The model card again, with these evaluation sections."""
    from tweetforge.data.snapshots import get_snapshot
    from tweetforge.registry.card import model_card

    info = json.loads((version.path / "tweetforge.json").read_text())
    write_document(version.location, "README.md", model_card(version, get_snapshot(engine, version.dataset), info.get("history", []), results))
