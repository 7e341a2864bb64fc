"""The errors si-hf raises on purpose, each naming what went wrong and what to do about it.

A leaf module: every other module may raise these without importing the one that defines the thing
that failed (the recipe, the Hub, the rounds on disk)."""


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the field and the reason."""


class HubError(RuntimeError):
    """A Hub operation that failed (after retries where retrying could help)."""


class RoundError(RuntimeError):
    """A round on disk that cannot be used (missing, corrupted) or cannot be written (disk full); the
    message names the file and the reason."""
