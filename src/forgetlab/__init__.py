"""forgetlab: measure, explain and reduce catastrophic forgetting."""

__version__ = "0.1.0"
