"""Benchmarks with their own loopback servers; not part of the test run."""
