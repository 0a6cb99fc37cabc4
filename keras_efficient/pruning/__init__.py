"""pruning."""

__all__ = []
