"""Read this process's memory: the peak a model cost, and what it holds now."""

from __future__ import annotations

import os
import resource
import sys


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far.

    Linux: VmHWM of /proc/self/status, the high-water mark of this process's own memory map.
    Not ru_maxrss there: the kernel carries the parent's peak across fork+exec, so a child of
    a 500 MB pipeline process would report 500 MB whatever it loads. Elsewhere ru_maxrss
    (KiB on Linux/Android, bytes on macOS)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def current_rss_mb() -> float | None:
    """Resident set size now (Linux /proc/self/statm); None where it cannot be read."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0)
    except (OSError, ValueError, IndexError):
        return None
