"""callbacks."""

__all__ = []
