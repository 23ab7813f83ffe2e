"""The LSTM of the "LSTM vs GPT-2" pipeline: a token-level LSTM language model in PyTorch, written as a
Hugging Face PreTrainedModel so that it trains, saves, reloads (config + safetensors, no training
state needed) and generates through the same code as the transformers."""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GenerationMixin,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import CausalLMOutput


class TweetLSTMConfig(PretrainedConfig):
    model_type = "tweetforge-lstm"

    def __init__(self, vocab_size: int = 8000, embedding_size: int = 256, hidden_size: int = 512,
                 num_layers: int = 2, dropout: float = 0.1, tie_word_embeddings: bool = False, **kwargs):
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)


class TweetLSTMForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = TweetLSTMConfig
    base_model_prefix = "lstm"
    main_input_name = "input_ids"

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # a recurrent model keeps no key/value cache

    def __init__(self, config: TweetLSTMConfig):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.embedding_size)
        self.lstm = nn.LSTM(
            config.embedding_size, config.hidden_size, num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0, batch_first=True,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.head

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, attention_mask=None, **_) -> CausalLMOutput:
        hidden, _state = self.lstm(self.drop(self.embed(input_ids)))
        logits = self.head(self.drop(hidden))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)).float(), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, **kwargs):
        # No recurrent-state cache: posts are short, re-reading the prefix costs little.
        return {"input_ids": input_ids}


AutoConfig.register(TweetLSTMConfig.model_type, TweetLSTMConfig)
AutoModelForCausalLM.register(TweetLSTMConfig, TweetLSTMForCausalLM)
