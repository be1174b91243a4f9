"""Benchmarks of the serving stack, run from a clone: ``python -m bench`` and the modules
it names; what each measures, how to run it and the current figures: docs/benchmarks.md."""
