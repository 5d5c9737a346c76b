"""Stages that are not compression or export: finetune and evaluate."""
