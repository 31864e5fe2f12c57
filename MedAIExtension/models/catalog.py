"""The model catalogue: Resources/Models/catalog.json (validated against its JSON schema) plus user models.

User models are found without code changes in the user model folders (``MEDAI_MODELS_DIR``, ``~/.medai/models``
or ``--models-dir``):

* ``<name>.onnx`` with a sidecar ``<name>.json`` holding one catalogue entry (the same schema), or an ONNX file
  whose metadata property ``medai.entry`` holds that entry, or a bare ONNX file (listed with generic defaults);
* a MONAI bundle folder (``configs/inference.json`` + ``configs/metadata.json``), parsed with ``monai.bundle``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from MedAIExtension.errors import CatalogError
from MedAIExtension.models.discovery import discover_user_models
from MedAIExtension.models.entry import (
    DEFAULT_CATALOG,
    RESOURCES_DIR,
    SCHEMA_PATH,
    InferenceSpec,
    InputSpec,
    ModelEntry,
    ModelFile,
    PostprocessingSpec,
    sha256_of,
    validate_catalog_data,
)

__all__ = [
    "DEFAULT_CATALOG",
    "RESOURCES_DIR",
    "SCHEMA_PATH",
    "Catalog",
    "InferenceSpec",
    "InputSpec",
    "ModelEntry",
    "ModelFile",
    "PostprocessingSpec",
    "load_catalog",
    "sha256_of",
    "user_model_dirs",
    "validate_catalog_data",
]


def user_model_dirs(extra: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
    """Folders searched for user models: ``extra``, ``$MEDAI_MODELS_DIR`` (os.pathsep list), ``~/.medai/models``."""
    dirs = [Path(p) for p in extra]
    env = os.environ.get("MEDAI_MODELS_DIR", "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs.append(Path.home() / ".medai" / "models")
    return [d for d in dirs if d.is_dir()]


class Catalog:
    """The models MedAI knows: the shipped catalogue plus models found in user folders."""

    def __init__(self, entries: Iterable[ModelEntry], problems: Iterable[str] = ()) -> None:
        self._entries: dict[str, ModelEntry] = {}
        for entry in entries:
            if entry.name in self._entries:
                raise CatalogError(f"Two models are named {entry.name!r}; rename one of them.")
            self._entries[entry.name] = entry
        #: Messages about user models that could not be listed (shown by ``medai models``).
        self.problems: list[str] = list(problems)
        for entry in self._entries.values():
            if entry.cpu_variant in self._entries:
                _check_cpu_variant(entry, self._entries[entry.cpu_variant])

    def names(self) -> list[str]:
        """Model names in catalogue order."""
        return list(self._entries)

    def entries(self) -> list[ModelEntry]:
        """All entries in catalogue order."""
        return list(self._entries.values())

    def get(self, name: str) -> ModelEntry:
        """The entry called ``name``; raises :class:`CatalogError` listing the known names otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self._entries) or "(none)"
            raise CatalogError(
                f"Unknown model {name!r}. Known models: {known}. Run 'medai models' to list them."
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


def _check_cpu_variant(entry: ModelEntry, variant: ModelEntry) -> None:
    """Refuse a ``cpu_variant`` that is not the same model (task, version, input, labels) in another form."""

    def names(model: ModelEntry) -> list[tuple[int, str]]:
        return [(label.value, label.name) for label in model.labels]

    same = (
        variant.name != entry.name
        and variant.task == entry.task
        and variant.version == entry.version
        and variant.input == entry.input
        and names(variant) == names(entry)
    )
    if not same:
        raise CatalogError(
            f"Model {entry.name}: its cpu_variant {variant.name!r} is not the same model in another form (task, "
            "version, input and labels must match). Fix cpu_variant in the catalogue or remove it."
        )


def _read_catalog_file(path: Path) -> list[ModelEntry]:
    if not path.is_file():
        raise CatalogError(f"The model catalogue {path} is missing. Reinstall the extension.")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise CatalogError(
            f"The model catalogue {path} is not valid JSON (line {exc.lineno}: {exc.msg}). Fix or restore the file."
        ) from None
    validate_catalog_data(data, f"The model catalogue {path}")
    return [ModelEntry.from_dict(item, path.parent) for item in data["models"]]


def load_catalog(
    path: str | os.PathLike[str] | None = None,
    models_dirs: Iterable[str | os.PathLike[str]] = (),
    include_user_models: bool = True,
) -> Catalog:
    """Load the catalogue at ``path`` (default: the shipped one) plus user models.

    Raises:
        CatalogError: the catalogue is missing, not JSON, or fails its schema.
    """
    entries = _read_catalog_file(Path(path) if path else DEFAULT_CATALOG)
    problems: list[str] = []
    if include_user_models:
        known = {e.name for e in entries}
        for entry_or_problem in discover_user_models(user_model_dirs(models_dirs)):
            if isinstance(entry_or_problem, str):
                problems.append(entry_or_problem)
            elif entry_or_problem.name in known:
                problems.append(f"User model {entry_or_problem.name!r} has the name of a shipped model; skipped it.")
            else:
                known.add(entry_or_problem.name)
                entries.append(entry_or_problem)
    return Catalog(entries, problems)
