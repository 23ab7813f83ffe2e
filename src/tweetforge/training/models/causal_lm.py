"""Transformer causal LMs: a pretrained base (LoRA by default, or full fine-tune), or a small GPT-2 built
from a config for training from scratch. Exports are plain Hugging Face directories that
`transformers.pipeline("text-generation", model=DIR)` loads without tweetforge."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

LLAMA_LIKE_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
LLAMA_LIKE_MLP = ["gate_proj", "up_proj", "down_proj"]
GPT2_TARGETS = r".*\.attn\.(c_attn|c_proj)"
"""GPT-2's attention projections; a bare 'c_proj' would also catch the MLP's."""
LORA_MODULES = ("attention", "attention+mlp")


@dataclass(frozen=True)
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    top_layers: int = 0
    """Adapters on the top N decoder layers only; 0: every layer."""
    modules: str = "attention"
    """'attention' (q/k/v/o) or 'attention+mlp' (and the MLP's projections)."""


def lora_targets(model: torch.nn.Module, modules: str = "attention", layers: list[int] | None = None) -> dict[str, Any]:
    """LoraConfig arguments: which projections get adapters, in which layers (None: every layer)."""
    if modules not in LORA_MODULES:
        raise ValueError(f"--lora-modules {modules!r}: use {' or '.join(LORA_MODULES)}")
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    if set(LLAMA_LIKE_TARGETS) <= names:
        targets = LLAMA_LIKE_TARGETS + (LLAMA_LIKE_MLP if modules == "attention+mlp" else [])
        return {"target_modules": targets} | ({"layers_to_transform": layers} if layers is not None else {})
    if "c_attn" in names:  # GPT-2: a regex, which peft will not combine with layers_to_transform
        where = rf"\.h\.({'|'.join(map(str, layers))})" if layers is not None else ""
        what = r"(attn\.(c_attn|c_proj)|mlp\.(c_fc|c_proj))" if modules == "attention+mlp" else r"attn\.(c_attn|c_proj)"
        return {"target_modules": rf".*{where}\.{what}"}
    if layers is not None or modules != "attention":
        raise ValueError("--train-layers and --lora-modules need a Llama-like or GPT-2 model")
    return {"target_modules": "all-linear"}


def decoder_layer_count(model: Any) -> int:
    return int(getattr(model.config, "num_hidden_layers", None) or model.config.n_layer)


def top_layers(model: Any, count: int) -> list[int] | None:
    """The indices of the top `count` layers; None (every layer) for 0 or when the model has no more."""
    total = decoder_layer_count(model)
    if count < 0:
        raise ValueError(f"--train-layers {count}: use a number of layers, or 0 for every layer")
    return list(range(total - count, total)) if 0 < count < total else None


def input_embedding_name(model: torch.nn.Module) -> str:
    embeddings = model.get_input_embeddings()
    for name, module in model.named_modules():
        if module is embeddings:
            return name.rsplit(".", 1)[-1]
    raise ValueError("model has no input embedding module")


def add_control_tokens(model: Any, tokenizer: Any, tokens: list[str]) -> list[int]:
    """Add tokens (author controls) the vocabulary lacks, growing the embeddings to match."""
    missing = [t for t in tokens if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return tokenizer.convert_tokens_to_ids(tokens)


def load_pretrained(path: Path, control_tokens: list[str], lora: LoraSettings | None, frozen_bf16: bool = True):
    """(model, tokenizer) from a Hugging Face directory (a base model or an exported version, the LSTM
    included), with any missing control tokens added. Without LoRA every weight is float32 and trains.
    With LoRA the base weights are frozen (held in bf16 when frozen_bf16: half the memory, and faster
    where bf16 matmuls are) and only adapters and the new control-token embeddings train."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import tweetforge.training.models.lstm  # noqa: F401 - registers the LSTM architecture with the Auto classes

    tokenizer = AutoTokenizer.from_pretrained(path)
    dtype = torch.bfloat16 if (lora and frozen_bf16) else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    new_ids = add_control_tokens(model, tokenizer, control_tokens) if control_tokens else []
    if lora is None:
        return model, tokenizer
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        **lora_targets(model, lora.modules, top_layers(model, lora.top_layers)),
        trainable_token_indices={input_embedding_name(model): new_ids} if new_ids else None,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    for parameter in peft_model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    return peft_model, tokenizer


def build_scratch(tokenizer: Any, layers: int, width: int, block_size: int):
    """A GPT-2 architecture from a config, sized by the user; heads of 64 dimensions (at least one)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=max(block_size, 256),
        n_embd=width,
        n_layer=layers,
        n_head=max(1, width // 64),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def unwrap_for_export(model: Any) -> Any:
    """Merge LoRA adapters (and trained control tokens) into the weights, in float32 so the merge is exact."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model.float()
