"""Benchmarks on lab hosts (figures, not assertions)."""
