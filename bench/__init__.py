"""Benchmarks: gateway overhead, peer comparison, scale, Redis traffic, action pipeline."""
