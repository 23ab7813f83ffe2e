"""Models: base-model resolution, the causal-LM wrapper (pretrained, LoRA, from scratch), the LSTM,
tokenizers."""
