"""Mitigation methods (strategies) and their registry."""

from forgetlab.strategies.base import Naive, Strategy

STRATEGIES: dict[str, type[Strategy]] = {"naive": Naive}

__all__ = ["STRATEGIES", "Naive", "Strategy"]
