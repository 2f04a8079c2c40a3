"""The model families, each with its config beside it, and the registry of them."""

from pushforward.models.registry import MODELS

__all__ = ["MODELS"]
