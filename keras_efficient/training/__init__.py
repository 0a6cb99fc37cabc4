"""Gradient mechanisms for energy-efficient training (predictive sign gradients)."""

__all__ = []
