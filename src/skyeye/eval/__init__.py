"""Evaluation: metrics, each defined once and tested, and the benchmark suites built on them."""
