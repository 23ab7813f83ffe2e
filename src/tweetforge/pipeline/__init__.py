"""The stages as one living system: `bot` runs a handle all the way to a model, `watch` keeps models
fresh as new posts arrive (sync, retrain, gate, roll out), each step logged in pipeline_runs."""
