"""split."""

__all__ = []
