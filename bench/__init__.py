"""Benchmarks of issue 8: gateway overhead, peer comparison, scale, Redis traffic, action pipeline."""
