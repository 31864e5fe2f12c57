"""The model catalogue: Resources/Models/catalog.json (validated against its JSON schema) plus user models.

User models are found without code changes in the user model folders (``MEDAI_MODELS_DIR``, ``~/.medai/models``
or ``--models-dir``):

* ``<name>.onnx`` with a sidecar ``<name>.json`` holding one catalogue entry (the same schema), or an ONNX file
  whose metadata property ``medai.entry`` holds that entry, or a bare ONNX file (listed with generic defaults);
* a MONAI bundle folder (``configs/inference.json`` + ``configs/metadata.json``), parsed with ``monai.bundle``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from MedAIExtension.errors import CatalogError, ChecksumError
from MedAIExtension.labels import SegmentLabel

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


def _find_resources() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "Resources" / "Models" / "catalog.json"
        if candidate.is_file():
            return parent / "Resources"
    return here.parents[2] / "Resources"


RESOURCES_DIR: Path = _find_resources()
DEFAULT_CATALOG: Path = RESOURCES_DIR / "Models" / "catalog.json"
SCHEMA_PATH: Path = RESOURCES_DIR / "Models" / "catalog.schema.json"


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelFile:
    """A file that belongs to a model, with the sha256 it must have."""

    path: Path
    sha256: str | None
    role: str = "model"

    def verify(self) -> None:
        """Check existence and sha256; raises :class:`ChecksumError` / :class:`CatalogError`."""
        if not self.path.is_file():
            raise CatalogError(
                f"Model file {self.path} is missing. Reinstall the extension or fix the path in the catalogue."
            )
        if self.sha256 is None:
            return
        actual = sha256_of(self.path)
        if actual != self.sha256:
            raise ChecksumError(
                f"Model file {self.path.name} is corrupt or was replaced: its sha256 is {actual[:16]}… but the "
                f"catalogue expects {self.sha256[:16]}…. Restore the original file (reinstall the extension) or, "
                "for a model you changed on purpose, update its sha256 in the catalogue."
            )


@dataclass(frozen=True)
class InputSpec:
    """What the model expects as input."""

    modality: str = "any"
    spacing: tuple[float, float, float] | None = None
    orientation: str = "native"
    normalization: Mapping[str, Any] = field(default_factory=lambda: {"type": "none"})
    patch_size: tuple[int, int, int] = (96, 96, 96)
    channels: int = 1
    crop_foreground_above: float | None = None
    axis_order: str = "kji"


@dataclass(frozen=True)
class InferenceSpec:
    """Sliding-window settings (the user may override them per run)."""

    overlap: float = 0.25
    batch_size: int = 2
    mode: str = "gaussian"


@dataclass(frozen=True)
class PostprocessingSpec:
    """Label-map clean-up after argmax."""

    keep_largest_component: tuple[tuple[int, int], ...] = ()
    min_component_mm3: float = 0.0


@dataclass(frozen=True)
class ModelEntry:
    """One model in the catalogue."""

    name: str
    title: str
    version: str
    task: str
    backend: str
    files: tuple[ModelFile, ...]
    input: InputSpec
    labels: tuple[SegmentLabel, ...]
    inference: InferenceSpec = InferenceSpec()
    postprocessing: PostprocessingSpec = PostprocessingSpec()
    description: str = ""
    bundle_dir: Path | None = None
    source: str = "catalogue"
    training: Mapping[str, Any] = field(default_factory=dict)
    #: Explainability defaults from the catalogue (``target_layer``, ``target_label``).
    explain: Mapping[str, Any] = field(default_factory=dict)
    #: Another entry with the same weights that runs faster on the CPU (segmentation loads it there).
    cpu_variant: str | None = None

    def __post_init__(self) -> None:
        values = [label.value for label in self.labels]
        if len(set(values)) != len(values):
            raise CatalogError(f"Model {self.name}: two labels share a value; give each label its own value.")

    @property
    def model_file(self) -> Path:
        """The main file the backend loads (first file with role 'model', else the first file)."""
        for item in self.files:
            if item.role == "model":
                return item.path
        return self.files[0].path

    def verify_files(self) -> None:
        """Check that every file exists and has its catalogue sha256."""
        for item in self.files:
            item.verify()

    @property
    def is_classifier(self) -> bool:
        """True for a classification model (one score per class; channel ``c`` is ``labels[c]``)."""
        return self.task == "classification"

    def channel_of(self, value: int) -> int:
        """The output channel that holds label ``value`` (segmentation: channel 0 is background)."""
        for index, label in enumerate(self.labels):
            if label.value == value:
                return index if self.is_classifier else index + 1
        names = ", ".join(f"{label.value} ({label.name})" for label in self.labels)
        raise KeyError(f"Model {self.name} has no label {value}; its labels are {names}.")

    def label(self, value: int) -> SegmentLabel:
        """The label with voxel value ``value``."""
        for label in self.labels:
            if label.value == value:
                return label
        raise KeyError(value)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: Path, source: str = "catalogue") -> ModelEntry:
        """Build an entry from its (already schema-validated) JSON form; paths are relative to ``base_dir``."""
        inp = data["input"]
        spacing = inp.get("spacing")
        return cls(
            name=data["name"],
            title=data["title"],
            version=data["version"],
            task=data["task"],
            backend=data["backend"],
            description=data.get("description", ""),
            files=tuple(
                ModelFile(base_dir / f["path"], f.get("sha256"), f.get("role", "model")) for f in data["files"]
            ),
            bundle_dir=(base_dir / data["bundle_dir"]) if data.get("bundle_dir") else None,
            input=InputSpec(
                modality=inp["modality"],
                spacing=tuple(float(v) for v in spacing) if spacing else None,  # type: ignore[arg-type]
                orientation=inp["orientation"],
                normalization=dict(inp["normalization"]),
                patch_size=tuple(int(v) for v in inp["patch_size"]),  # type: ignore[arg-type]
                channels=int(inp.get("channels", 1)),
                crop_foreground_above=inp.get("crop_foreground_above"),
                axis_order=inp.get("axis_order", "kji"),
            ),
            inference=InferenceSpec(**data.get("inference", {})),
            postprocessing=PostprocessingSpec(
                keep_largest_component=tuple(
                    (int(item["label"]), int(item.get("components", 1)))
                    for item in data.get("postprocessing", {}).get("keep_largest_component", [])
                ),
                min_component_mm3=float(data.get("postprocessing", {}).get("min_component_mm3", 0.0)),
            ),
            labels=tuple(SegmentLabel.from_dict(label) for label in data["labels"]),
            source=source,
            training=dict(data.get("training", {})),
            explain=dict(data.get("explain", {})),
            cpu_variant=data.get("cpu_variant"),
        )


def _load_schema() -> dict[str, Any]:
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        return json.load(handle)


def validate_catalog_data(data: Any, where: str, entry_only: bool = False) -> None:
    """Validate catalogue JSON (or one entry) against the schema; raise :class:`CatalogError` naming the spot."""
    import jsonschema

    schema = _load_schema()
    if entry_only:
        schema = {**schema, "$ref": "#/$defs/model"}
        for key in ("required", "properties", "additionalProperties", "type"):
            schema.pop(key, None)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        location = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise CatalogError(
            f"{where} does not match the catalogue schema at {location}: {error.message}. "
            f"Fix the entry (schema: {SCHEMA_PATH.name})."
        )


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
    from MedAIExtension.models.discovery import discover_user_models

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
