"""schedules."""

__all__ = []
