"""Benchmarks and helpers that are not part of the installed package (random-weight models, golden vectors)."""
