"""The one base of every error a user may see. Each stage raises its own kind (SourceError, DatasetError,
TrainingError, RegistryError, …), whose message says what is wrong and what to do; the command line
prints every one the same way, as one line, and exits 1."""

from __future__ import annotations


class TweetforgeError(Exception):
    """An error for the person at the keyboard: the message names the file, line, field, model or account."""
