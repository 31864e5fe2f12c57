"""Validation and hashing helpers of the review project store (pure functions, no database)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import numbers
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.review.store.records import ImageRole

if TYPE_CHECKING:
    from MedAIExtension.io.image import Image

__all__ = [
    "check_flag",
    "check_name",
    "check_score",
    "check_seconds",
    "check_vocabulary",
    "image_sha256",
    "now_utc",
    "parse_role",
    "to_json",
]

_MAX_WORD = 64


def now_utc() -> str:
    """The current UTC time as ISO 8601 with milliseconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, default=_json_default, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"The {what} cannot be stored as JSON ({exc}). Use numbers, strings, lists and dicts."
        ) from None


def image_sha256(image: Image) -> str:
    """Content hash of an image: voxel values and geometry, independent of file format and voxel type.

    Hashes the shape, the IJK-to-RAS affine rounded to 0.1 µm (NIfTI stores it in float32) and the voxel values
    as little-endian float64, slice by slice (so a 16-bit NRRD and a float NIfTI of the same voxels hash alike,
    without a full float64 copy of a large volume).
    """
    digest = hashlib.sha256(b"medai-image-sha256-v1\x00")
    affine = [round(float(v), 4) + 0.0 for v in np.asarray(image.ijk_to_ras, dtype=float).ravel()]
    digest.update(json.dumps({"shape": list(image.shape), "ijk_to_ras": affine}).encode())
    for k in range(image.shape[0]):
        digest.update(np.ascontiguousarray(image.array[k], dtype="<f8").tobytes())
    return digest.hexdigest()


@overload
def parse_role(role: str | ImageRole, allow_none: Literal[False] = False) -> ImageRole: ...


@overload
def parse_role(role: str | ImageRole | None, allow_none: bool) -> ImageRole | None: ...


def parse_role(role: str | ImageRole | None, allow_none: bool = False) -> ImageRole | None:
    if role is None and allow_none:
        return None
    try:
        return ImageRole(str(role).strip().lower())
    except ValueError:
        raise InputError(f"Unknown image role {role!r}; use 'synthetic' or 'real'.") from None


def check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"The {what} must be a non-empty name, got {value!r}. Give it (e.g. --reviewer dr_smith).")
    if len(value.strip()) > 200:
        raise InputError(f"The {what} is longer than 200 characters; give a shorter name.")
    return value.strip()


def check_score(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= int(value) <= 5:
        raise InputError(f"The {what} must be a whole number from 1 to 5 (or none), got {value!r}.")
    return int(value)


def check_seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise InputError(f"The time spent must be a number of seconds >= 0 (or none), got {value!r}.")
    return float(value)


@overload
def check_flag(value: Any, what: str, allow_none: Literal[False]) -> bool: ...


@overload
def check_flag(value: Any, what: str, allow_none: bool = True) -> bool | None: ...


def check_flag(value: Any, what: str, allow_none: bool = True) -> bool | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{what} must be true or false{' (or none)' if allow_none else ''}, got {value!r}.")
    return bool(value)


def check_vocabulary(words: Sequence[str]) -> tuple[str, ...]:
    if isinstance(words, str):
        words = [words]
    cleaned: list[str] = []
    for word in words:
        if not isinstance(word, str) or not word.strip():
            raise InputError(f"Artifact flags must be non-empty words, got {word!r}.")
        word = " ".join(word.split())
        if "," in word or len(word) > _MAX_WORD:
            raise InputError(f"The artifact flag {word!r} must have no comma and at most {_MAX_WORD} characters.")
        if word.casefold() in (w.casefold() for w in cleaned):
            raise InputError(f"The artifact flag {word!r} is listed twice; give each flag once.")
        cleaned.append(word)
    if not cleaned:
        raise InputError("The artifact vocabulary is empty; give at least one flag (e.g. 'other').")
    return tuple(cleaned)
