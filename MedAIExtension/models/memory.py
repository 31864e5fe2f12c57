"""Recognising out-of-memory failures of torch, ONNX Runtime and numpy, so callers can retry with less."""

from __future__ import annotations

import sys

__all__ = ["free_gpu_memory", "is_out_of_memory"]

_MARKERS = ("out of memory", "outofmemory", "failed to allocate", "can't allocate", "bad_alloc", "bad alloc")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says memory ran out (MemoryError, CUDA/CPU allocator errors, ORT allocation failures)."""
    if isinstance(error, MemoryError):
        return True
    text = f"{type(error).__name__} {error}".lower()
    return any(marker in text for marker in _MARKERS)


def free_gpu_memory() -> None:
    """Give cached CUDA memory back (when torch is loaded and sees a GPU) before a retry."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
