"""`import tweetforge.models.lstm` registers the LSTM with transformers' Auto classes (see
tweetforge.training.models.lstm, where it lives)."""

from tweetforge.training.models.lstm import TweetLSTMConfig, TweetLSTMForCausalLM

__all__ = ["TweetLSTMConfig", "TweetLSTMForCausalLM"]
