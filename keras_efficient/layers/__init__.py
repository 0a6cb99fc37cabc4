"""layers."""

__all__ = []
