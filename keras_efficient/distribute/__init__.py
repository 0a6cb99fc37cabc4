"""distribute."""

__all__ = []
