"""tweetforge: turn someone's posts into a small language model that writes like them."""

__version__ = "0.1.0"
