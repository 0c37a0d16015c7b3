"""Spark entrypoints: each module is one job, `main(--ds ...)` over pure DataFrame functions."""
