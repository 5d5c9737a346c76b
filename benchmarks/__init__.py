"""Benchmark harness, devices and report."""
