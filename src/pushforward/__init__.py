"""pushforward: deep generative networks as pushforwards g#μ."""

__version__ = "0.1.0"
