"""FastGate: an API and AI gateway with a compiled hot path."""

__version__ = "0.1.0"
