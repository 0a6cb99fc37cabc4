"""Serializable schedules, pure functions of the training step."""

__all__ = []
