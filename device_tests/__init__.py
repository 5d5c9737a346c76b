"""On-device test suite and the numpy-only runtime adapters it shares with the host tools."""
