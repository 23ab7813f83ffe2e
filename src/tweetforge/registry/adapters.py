"""The unmerged LoRA adapter a version keeps beside its merged export (`<version>/adapter/`, a peft
directory), and the base it applies to, named by path and content hash. A server holds one base and
every persona's adapter beside it; vLLM takes the same directories.

A version continued with `--from` was trained as new adapters on its parent's merged weights. Its
adapter is stored relative to the root base all the same: the parent's chain and the new adapter
concatenated along the rank (A stacked, B side by side, each with its own scale folded in), so
W + s1·B1A1 + s2·B2A2 is one adapter of rank r1+r2 and serving it is exact, not an approximation."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from tweetforge.errors import TweetforgeError

ADAPTER_DIR = "adapter"
WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


class AdapterError(TweetforgeError):
    """A version's adapter that cannot be used: its base is gone or changed, or its files are not peft's."""


def weights_hash(directory: Path) -> str:
    """sha256 over a model directory's weight files, in name order: what the base is, wherever it lies."""
    digest = hashlib.sha256()
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    if not files:
        raise AdapterError(f"{directory}: no weight files (*.safetensors) to identify the base by")
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as stream:
            while chunk := stream.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def lora_scale(config: dict[str, Any]) -> float:
    r = config["r"]
    return config["lora_alpha"] / (r**0.5 if config.get("use_rslora") else r)


def lora_pairs(tensors: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{module name: (A, B)} from an adapter's tensors (base_model.model.<module>.lora_A.weight …)."""
    pairs = {}
    for key, a in tensors.items():
        if key.endswith(".lora_A.weight"):
            module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            pairs[module] = (a, tensors[key.replace(".lora_A.", ".lora_B.")])
    return pairs


def concatenate(parent: tuple[dict, dict], child: tuple[dict, dict]) -> tuple[dict, dict]:
    """(config, tensors) of one adapter equal to the parent's followed by the child's; a module only one
    of them adapts gets zero rows from the other."""
    import torch

    (parent_config, parent_tensors), (child_config, child_tensors) = parent, child
    if any(c.get("rank_pattern") or c.get("alpha_pattern") for c in (parent_config, child_config)):
        raise AdapterError("adapters with per-module ranks or alphas cannot be concatenated")
    sides = [(lora_pairs(parent_tensors), parent_config["r"], lora_scale(parent_config)),
             (lora_pairs(child_tensors), child_config["r"], lora_scale(child_config))]
    modules = sorted(set(sides[0][0]) | set(sides[1][0]))
    tensors: dict[str, Any] = {}
    for module in modules:
        a_in, b_out = next((p[module][0].shape[1], p[module][1].shape[0]) for p, _, _ in sides if module in p)
        a_parts, b_parts = [], []
        for pairs, r, scale in sides:
            a, b = pairs.get(module, (torch.zeros(r, a_in), torch.zeros(b_out, r)))
            a_parts.append(a.float())
            b_parts.append(b.float() * scale)
        tensors[f"base_model.model.{module}.lora_A.weight"] = torch.cat(a_parts, 0).contiguous()
        tensors[f"base_model.model.{module}.lora_B.weight"] = torch.cat(b_parts, 1).contiguous()
    # trainable control-token rows: the child's where it trained new ones, else the parent's (merged into the child's base)
    tokens_from = (child_config, child_tensors) if child_config.get("trainable_token_indices") else (parent_config, parent_tensors)
    tensors |= {k: v for k, v in tokens_from[1].items() if ".token_adapter." in k}
    rank = parent_config["r"] + child_config["r"]
    config = child_config | {
        "r": rank, "lora_alpha": rank, "use_rslora": False,  # scale 1: each side's scale is folded into its B
        "target_modules": "^(" + "|".join(re.escape(m) for m in modules) + ")$", "layers_to_transform": None, "layers_pattern": None,
        "trainable_token_indices": tokens_from[0].get("trainable_token_indices"),
    }
    return config, tensors


def save_adapter(model: Any, directory: Path, parent: tuple[Path, dict[str, Any]] | None) -> dict[str, Any]:
    """Write a trained peft model's adapter to directory, relative to the root base: through the parent
    version's adapter (its directory and registry record) when the run continued one that has one.
    Returns what the registry records about it."""
    from safetensors.torch import load_file, save_file

    model.save_pretrained(directory)
    (directory / "README.md").unlink(missing_ok=True)  # peft's template card; the version's own card is the one to read
    config = json.loads((directory / CONFIG).read_text())
    chain_ranks = [config["r"]]
    if parent is not None:
        parent_dir, parent_adapter = parent
        parent_files = parent_dir / parent_adapter["dir"]
        config, tensors = concatenate((json.loads((parent_files / CONFIG).read_text()), load_file(parent_files / WEIGHTS)),
                                      (config, load_file(directory / WEIGHTS)))
        config["base_model_name_or_path"] = parent_adapter["base_path"]
        save_file(tensors, directory / WEIGHTS, metadata={"format": "pt"})
        chain_ranks = [*parent_adapter["chain_ranks"], chain_ranks[0]]
    (directory / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
    base = Path(config["base_model_name_or_path"])
    return {
        "dir": ADAPTER_DIR, "base_path": str(base), "base_sha256": weights_hash(base), "rank": config["r"], "chain_ranks": chain_ranks,
        "control_tokens": bool(config.get("trainable_token_indices")), "bytes": sum(f.stat().st_size for f in directory.iterdir()),
    }


def check_base(version_dir: Path, adapter: dict[str, Any], base_sha256: str | None = None) -> Path:
    """The base directory an adapter applies to, checked to be the one it was trained on. base_sha256: the
    base's hash when the caller already has it (a loaded base, one export), else the files are hashed."""
    base = Path(adapter["base_path"])
    if not (base / "config.json").exists():
        raise AdapterError(f"{version_dir}: its adapter's base {base} is gone; the merged export in {version_dir} still works")
    if (base_sha256 or weights_hash(base)) != adapter["base_sha256"]:
        raise AdapterError(f"{version_dir}: the base at {base} has changed since the adapter was trained (sha256 differs)")
    return base


def load_adapted(version_dir: Path, adapter: dict[str, Any]):  # type: ignore[no-untyped-def]
    """(peft model, tokenizer): the root base, grown to the version's vocabulary, with its adapter, in
    float32, for evaluation; the server keeps one base and many adapters instead."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = check_base(version_dir, adapter)
    tokenizer = AutoTokenizer.from_pretrained(version_dir)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return PeftModel.from_pretrained(model, version_dir / adapter["dir"]).eval(), tokenizer


VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM accepts for --max-lora-rank."""


def vllm_refusal(version: Any) -> str | None:
    """Why a version cannot be handed to vLLM as a LoRA adapter, or None when it can."""
    adapter = version.params.get("adapter")
    if adapter is None:
        return (f"{version.ref} is a {version.params.get('method') or version.kind} model with no LoRA adapter: "
                "serve its merged export as a model of its own")
    if adapter["control_tokens"]:
        return (f"{version.ref} trains author control-token embeddings, which vLLM's LoRA loader does not accept (it rejects "
                "modules_to_save and trainable tokens): serve its merged export as a model of its own")
    return None


def export_for_vllm(versions: list[tuple[str, Any]], directory: Path) -> dict[str, Any]:
    """Write one base and every (served name, version) adapter on it in vLLM's layout: directory/base (the
    base's files, hard-linked where the file system allows) and directory/adapters/<name> (peft directories
    pointing at it). Returns what was written, what was refused and why, and the `vllm serve` command."""
    import os
    import shlex
    import shutil

    if directory.exists() and any(directory.iterdir()):
        raise AdapterError(f"{directory} is not empty: export into a new directory")
    refused = {name: reason for name, v in versions if (reason := vllm_refusal(v))}
    chosen = [(name, v) for name, v in versions if name not in refused]
    bases = {v.params["adapter"]["base_path"] for _, v in chosen}
    if len(bases) > 1:
        raise AdapterError(f"the adapters are on {len(bases)} different bases ({', '.join(sorted(bases))}): export each base's personas apart")
    if not chosen:
        return {"base": None, "adapters": {}, "refused": refused, "command": None}
    base = Path(bases.pop())
    sha256 = weights_hash(base) if (base / "config.json").exists() else None
    for name, v in chosen:
        try:
            check_base(v.path, v.params["adapter"], sha256)
        except AdapterError as exc:
            refused[name] = str(exc)
    chosen = [(name, v) for name, v in chosen if name not in refused]
    if not chosen:
        return {"base": None, "adapters": {}, "refused": refused, "command": None}
    staging = directory.parent / f".{directory.name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "adapters").mkdir(parents=True)
    (staging / "base").mkdir()
    for file in (f for f in base.iterdir() if f.is_file()):
        try:
            os.link(file, staging / "base" / file.name)
        except OSError:
            shutil.copy2(file, staging / "base" / file.name)
    tokenizer_files = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja")
    for name in tokenizer_files:  # a converted base may lack them; its single-author versions carry the same tokenizer
        if not (staging / "base" / name).exists() and (chosen[0][1].path / name).exists():
            shutil.copy2(chosen[0][1].path / name, staging / "base" / name)
    written = {}
    for name, version in chosen:
        target = staging / "adapters" / name.replace(":", "-")
        shutil.copytree(version.path / version.params["adapter"]["dir"], target)
        config = json.loads((target / CONFIG).read_text())
        config["base_model_name_or_path"] = str(directory / "base")
        (target / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
        written[name] = {"ref": version.ref, "path": str(directory / "adapters" / target.name), "rank": config["r"]}
    if directory.exists():
        directory.rmdir()
    os.replace(staging, directory)
    rank = next(r for r in VLLM_RANKS if r >= max(w["rank"] for w in written.values()))
    command = ["vllm", "serve", str(directory / "base"), "--enable-lora", "--max-lora-rank", str(rank), "--max-loras", str(min(len(written), 64)),
               "--lora-modules", *(f"{name}={w['path']}" for name, w in written.items())]
    return {"base": str(directory / "base"), "adapters": written, "refused": refused, "command": shlex.join(command)}
