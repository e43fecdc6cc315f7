"""Benchmarks: each block side by side with the library a user would otherwise pick."""
