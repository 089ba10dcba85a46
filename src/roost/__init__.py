"""roost: train, serve and search your own LLM on your social network posts."""

__version__ = "0.1.0"
