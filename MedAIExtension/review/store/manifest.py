"""Reading image manifests (CSV or JSON) for a review project.

A manifest lists one image per row: ``path`` (required; relative paths are relative to the manifest's folder),
``role`` (``synthetic`` or ``real``), and provenance columns ``generator``, ``version``, ``seed``, ``parent``
(a real image's id in the project, or its path) plus any other column, which is kept in the provenance as is.

CSV: a header row with these column names (any case; a UTF-8 byte-order mark from Excel is fine).
JSON: a list of objects, or an object ``{"images": [...]}``.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from MedAIExtension.errors import InputError

__all__ = ["ManifestRow", "read_manifest"]

_EXAMPLE = "columns path, role, generator, version, seed, parent"


@dataclass(frozen=True)
class ManifestRow:
    """One manifest row, with paths resolved against the manifest's folder.

    Attributes:
        row: 1-based data row (CSV) or list entry (JSON).
        path: the image path as written in the manifest.
        resolved: the absolute image path (None when the row has no path).
        role: the role as written, or None.
        provenance: every other non-empty column (seed as int when it is a whole number; a relative ``parent``
            path that exists is made absolute).
        error: why the row cannot be used, or None.
    """

    row: int
    path: str
    resolved: Path | None
    role: str | None
    provenance: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _seed(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            return text
    return value


def _parent(value: Any, folder: Path) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        candidate = Path(text).expanduser()
        if not candidate.is_absolute():
            candidate = folder / candidate
        return str(candidate.resolve()) if candidate.exists() else text
    return value


def _row(number: int, entry: dict[str, Any], folder: Path) -> ManifestRow:
    values = {str(key).strip().lower(): value for key, value in entry.items() if key is not None}
    raw_path = values.pop("path", None)
    role = values.pop("role", None)
    role = None if _empty(role) else str(role).strip().lower()
    provenance: dict[str, Any] = {}
    for key, value in values.items():
        if not key or _empty(value):
            continue
        if key == "seed":
            value = _seed(value)
        elif key == "parent":
            value = _parent(value, folder)
        provenance[key] = value.strip() if isinstance(value, str) else value
    if _empty(raw_path) or not isinstance(raw_path, str):
        return ManifestRow(number, "", None, role, provenance, "the row has no path; fill in the path column")
    path = raw_path.strip()
    resolved = Path(path).expanduser()
    if not resolved.is_absolute():
        resolved = folder / resolved
    return ManifestRow(number, path, resolved.resolve(), role, provenance)


def _read_csv(manifest: Path) -> list[dict[str, Any]]:
    with manifest.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip().lower() for name in reader.fieldnames or ()]
        if "path" not in columns:
            found = ", ".join(columns) or "none"
            raise InputError(
                f"The manifest {manifest.name} has no 'path' column (columns found: {found}). "
                f"Give a header row with {_EXAMPLE}."
            )
        return [dict(row) for row in reader]


def _read_json(manifest: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(
            f"The manifest {manifest.name} is not valid JSON ({exc.msg} at line {exc.lineno}). "
            "Fix the file or give a CSV manifest."
        ) from None
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        data = data["images"]
    if not isinstance(data, list) or not all(isinstance(entry, dict) for entry in data):
        raise InputError(
            f'The JSON manifest {manifest.name} must be a list of objects (or {{"images": [...]}}) with keys '
            f"path, role, generator, version, seed, parent."
        )
    return data


def read_manifest(manifest: str | os.PathLike[str]) -> list[ManifestRow]:
    """Read a CSV or JSON manifest; a bad row becomes a row with ``error`` set, not an exception.

    Raises:
        InputError: the manifest is missing, of another format, unreadable, or has no path column.
    """
    manifest = Path(manifest).expanduser()
    if not manifest.is_file():
        raise InputError(f"The manifest {manifest} does not exist. Check the path to the CSV or JSON manifest.")
    suffix = manifest.suffix.lower()
    try:
        if suffix == ".csv":
            entries = _read_csv(manifest)
        elif suffix == ".json":
            entries = _read_json(manifest)
        else:
            raise InputError(
                f"{manifest.name} is not a manifest MedAI reads; give a .csv or .json file with {_EXAMPLE}."
            )
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"Cannot read the manifest {manifest} ({exc}). Save it as UTF-8 CSV or JSON.") from None
    folder = manifest.resolve().parent
    return [_row(number, entry, folder) for number, entry in enumerate(entries, start=1)]
