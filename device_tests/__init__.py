"""The on-device test suite: checks a bundle where it runs, with numpy, pytest and one runtime (through edge_runtime)."""
