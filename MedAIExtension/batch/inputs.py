"""The studies of a batch: found in a folder tree or listed in a CSV manifest.

A folder tree yields one study per DICOM series folder (found with the loader's series discovery,
:func:`~MedAIExtension.io.dicom_series.list_series`) and one per NIfTI/NRRD file. A manifest is a CSV file with a
column ``input`` (a DICOM folder or a volume file, relative paths taken from the manifest's folder) and an optional
column ``reference`` (a label map). A study's key is derived from its location only, never from DICOM content. A
DICOMweb query (:mod:`MedAIExtension.batch.dicomweb_input`) yields one study per series, retrieved by the worker that
runs it.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from MedAIExtension.batch.records import study_key
from MedAIExtension.errors import InputError
from MedAIExtension.io.dicom_series import list_series, walk_files
from MedAIExtension.io.volume_files import VOLUME_SUFFIXES, is_volume_file

__all__ = ["StudyInput", "discover_studies", "volume_stem"]

#: How a DICOMweb query given as ``--input`` starts (``dicomweb:Modality=CT&StudyDate=20240101-20241231``).
DICOMWEB_PREFIX = "dicomweb:"


@dataclass(frozen=True)
class StudyInput:
    """One study to segment.

    Attributes:
        source: the input location as given (a folder or file path; ``#series-N`` appended when a folder holds
            several series, N counting them in the folder).
        path: the DICOM folder or the volume file to load.
        series: the SeriesInstanceUID to read from ``path`` (DICOM only; data, never used in a path or key).
        reference: the reference label map, when there is one.
        study_uid: for a series on a DICOMweb server, its StudyInstanceUID (``path`` is then empty: the worker
            retrieves the series into a folder of its own first).
    """

    source: str
    path: Path
    series: str | None = None
    reference: Path | None = None
    study_uid: str | None = None

    @property
    def key(self) -> str:
        """The study's key (:func:`~MedAIExtension.batch.records.study_key` of ``source``)."""
        return study_key(self.source)

    @property
    def is_dicom(self) -> bool:
        """Whether the study is a DICOM folder (or a series on a DICOMweb server)."""
        return self.is_remote or self.path.is_dir()

    @property
    def is_remote(self) -> bool:
        """Whether the study is a series on a DICOMweb server, to be retrieved before it is read."""
        return self.study_uid is not None


def volume_stem(path: Path) -> str:
    """A file's name without its volume suffix (``ct.nii.gz`` -> ``ct``), or a folder's name."""
    name = path.name
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _references_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"--reference {folder} is not a folder. Give a folder of label maps named like the inputs.")
    return {volume_stem(p): p for p in sorted(folder.iterdir()) if p.is_file() and is_volume_file(p)}


def _top_folders(folders: set[Path]) -> list[Path]:
    """The folders of ``folders`` that lie inside no other one (a series split over sub-folders is one study)."""
    tops: list[Path] = []
    for folder in sorted(folders, key=lambda p: len(p.parts)):
        if not any(top == folder or top in folder.parents for top in tops):
            tops.append(folder)
    return tops


def _from_tree(root: Path, skip: Path | None) -> list[StudyInput]:
    studies: list[StudyInput] = []
    skip_resolved = skip.resolve() if skip is not None else None
    for path in walk_files(root):
        if skip_resolved is not None and skip_resolved in path.resolve().parents:
            continue
        if is_volume_file(path):
            studies.append(StudyInput(str(path), path))
    series, _skipped = list_series(root)
    per_folder: dict[Path, list[str]] = {}
    for info in series:
        folders = {f.parent for f in info.files}
        if skip_resolved is not None:
            folders = {f for f in folders if f.resolve() != skip_resolved and skip_resolved not in f.resolve().parents}
        for folder in _top_folders(folders):  # a copy of a series elsewhere in the tree is a study of its own
            per_folder.setdefault(folder, []).append(info.series_uid)
    for folder, uids in sorted(per_folder.items()):
        for index, uid in enumerate(uids, start=1):
            source = str(folder) if len(uids) == 1 else f"{folder}#series-{index}"
            studies.append(StudyInput(source, folder, series=uid))
    return sorted(studies, key=lambda s: s.source)


def _from_manifest(manifest: Path) -> list[StudyInput]:
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"Cannot read the manifest {manifest} ({exc}). Give a UTF-8 CSV file.") from None
    if not rows or "input" not in rows[0]:
        raise InputError(
            f"The manifest {manifest} has no 'input' column (or no rows). Give a CSV with a header line "
            "'input[,reference]' and one study per line."
        )
    base = manifest.parent
    studies = []
    for number, row in enumerate(rows, start=2):
        given = (row.get("input") or "").strip()
        if not given:
            raise InputError(f"Line {number} of {manifest} has an empty 'input'. Fill it in or remove the line.")
        path = Path(given) if os.path.isabs(given) else base / given
        reference_text = (row.get("reference") or "").strip()
        reference = None
        if reference_text:
            reference = Path(reference_text) if os.path.isabs(reference_text) else base / reference_text
            if not reference.is_file():
                raise InputError(f"Line {number} of {manifest}: the reference {reference} does not exist.")
        if not path.exists():
            raise InputError(f"Line {number} of {manifest}: the input {path} does not exist. Fix the path.")
        studies.append(StudyInput(str(path), path, reference=reference))
    return studies


def discover_studies(
    input_path: str | os.PathLike[str], reference: str | os.PathLike[str] | None = None, skip: Path | None = None
) -> list[StudyInput]:
    """The studies of ``input_path`` (folder tree, volume file or ``.csv`` manifest), with their references.

    Args:
        input_path: the ``--input`` of ``medai batch``.
        reference: a folder of label maps matched to the studies by file stem (``ct.nii.gz`` <-> ``ct.nrrd``; a
            DICOM folder by its name). A manifest's ``reference`` column wins over it.
        skip: a folder inside the tree to leave out (the batch's own output folder).

    Raises:
        InputError: no such input, a URL, a DICOMweb query (see
            :func:`~MedAIExtension.batch.dicomweb_input.discover_dicomweb_studies`), a bad manifest, or no study
            found.
    """
    text = str(input_path)
    if text.lower().startswith(("http://", "https://", DICOMWEB_PREFIX)):
        raise InputError(
            f"--input {text} is a URL or a DICOMweb query; give the query as '{DICOMWEB_PREFIX}Modality=CT&…' "
            "together with --gateway-config (the gateway's YAML, whose pacs section says where the DICOMweb server "
            "is and how to log in)."
        )
    path = Path(input_path)
    if not path.exists():
        raise InputError(f"--input {path} does not exist. Give a folder tree of studies, a volume file or a manifest.")
    if path.is_file() and path.suffix.lower() == ".csv":
        studies = _from_manifest(path)
    elif path.is_file():
        if not is_volume_file(path):
            raise InputError(
                f"--input {path.name} is neither a folder, a volume file ({', '.join(VOLUME_SUFFIXES)}) nor a .csv "
                "manifest. Point --input at one of these."
            )
        studies = [StudyInput(str(path), path)]
    else:
        studies = _from_tree(path, skip)
    if not studies:
        raise InputError(
            f"No study found under {path}: no DICOM series and no {', '.join(VOLUME_SUFFIXES)} file. "
            "Check --input, or list the studies in a CSV manifest."
        )
    if reference is not None:
        by_stem = _references_by_stem(Path(reference))
        studies = [
            s if s.reference is not None else StudyInput(s.source, s.path, s.series, by_stem.get(volume_stem(s.path)))
            for s in studies
        ]
    keys = [s.key for s in studies]
    if len(set(keys)) != len(keys):
        raise InputError("The manifest lists a study twice. Give each input once.")
    return studies
