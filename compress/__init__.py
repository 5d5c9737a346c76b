"""Compression stages: distill, prune, quantize."""
