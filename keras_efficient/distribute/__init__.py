"""Distribution strategies for CPUs, GPUs, Graphcore IPUs and multiple workers."""

__all__ = []
