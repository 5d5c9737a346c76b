"""albert-edge: distill, prune, int8-quantize and export ALBERT classifiers for edge devices."""

__version__ = "0.1.0"
