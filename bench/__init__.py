"""Benchmarks of the serving stack (issue 4); results and commands in docs/benchmarks.md."""
