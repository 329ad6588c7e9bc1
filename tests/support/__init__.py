"""Launchers of the real servers the tests and benchmarks start (not part of the product)."""
