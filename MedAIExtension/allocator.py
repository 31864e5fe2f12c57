"""Process-wide memory allocator setting for MedAI's job processes (``medai`` and the Slicer modules' worker).

A segmentation allocates and frees arrays of tens to hundreds of MB many times over (resampled volumes, window
batches, network activations, class scores, label maps). By default glibc's ``malloc`` hands every block above
its mmap threshold straight to the kernel and gives freed memory back, so the next array of that size is
faulted in again page by page; on virtual machines a page fault is expensive, and this costs seconds per CT.
:func:`keep_freed_memory` tells ``malloc`` to serve such blocks from its heap and keep what is freed for reuse.
The price is that the process's resident memory stays at its peak until it exits, which is why only short-lived
job processes call it (never Slicer's own process, nor the long-running gateway).
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_INT_MAX = 2**31 - 1


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory and serve large blocks from its heap; True when applied.

    Does nothing (and returns False) off Linux, with another C library, or when the environment variable
    ``MEDAI_KEEP_FREED_MEMORY`` is ``0``.
    """
    if not sys.platform.startswith("linux") or os.environ.get("MEDAI_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl and others have other mallocs)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # blocks up to 1 GiB come from the heap; freed memory is never trimmed back to the kernel
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
