"""Split computing: early exit, device/server export, transmission and coverage analysis."""

__all__ = []
