"""Pruning analysis and physical removal of pruned units."""

__all__ = []
