"""Dataset → model: the training loop, experiment tracking, and the model kinds it trains (models/)."""
