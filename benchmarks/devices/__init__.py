"""Devices the harness can run on: local, ssh, adb, qemu-aarch64."""
