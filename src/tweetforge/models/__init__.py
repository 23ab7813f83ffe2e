"""Kept so that `import tweetforge.models.lstm`, which exported LSTM model cards tell users to run, goes
on working; the models live in tweetforge.training.models."""
