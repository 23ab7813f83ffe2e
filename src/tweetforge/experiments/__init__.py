"""Which is better? A/B experiments between model versions and their statistics."""
