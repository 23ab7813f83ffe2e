"""Posts from a registered model: sampling that stops at the end of a post, held to 280 characters,
reproducible with a seed, through the copy filter."""
