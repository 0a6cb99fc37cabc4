"""Losses and regularisers from the papers (mimic, mixture KL, negative log-likelihood, ...)."""

__all__ = []
