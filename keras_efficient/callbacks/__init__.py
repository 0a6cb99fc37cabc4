"""Callbacks: training-progress monitors, stochastic weight averaging, compute accounting."""

__all__ = []
