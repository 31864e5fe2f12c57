"""De-identification of DICOM studies and their derived objects (PS3.15 Basic Application Level Confidentiality).

Every attribute of Table E.1-1 (:mod:`MedAIExtension.deid.profile`) is handled by its action at every nesting
level; private attributes, curves (50xx) and overlays (60xx, the whole group: an overlay without its data
would be invalid) are removed. Every UI value that is not a registered DICOM UID is remapped with a keyed,
deterministic map (:func:`~MedAIExtension.deid.uids.remap_uid`), so a study and its SEG, SR, Parametric Map
and Secondary Capture — de-identified together or in later runs with the same key — still reference each
other. Patient ID and Name become a key-derived pseudonym.

Choices where the profile leaves room:

* Content Sequence (D): the SR content tree is kept (a report without content is useless) and cleaned like the
  rest: person names, dates and identifying observer/subject texts become dummies, UIDs are remapped. Other
  free text in TEXT items (e.g. MedAI's tracking identifiers and Lung-RADS reasons) is kept.
* Dates: by default per the profile (emptied, removed or a dummy ``19000101``). With ``date_shift_days`` every
  DA/DT value is shifted by that many days instead and times are kept (the Retain Longitudinal Temporal
  Information with Modified Dates Option, DCM 113107); the shift itself is never written. Patient's Birth Date
  is emptied in both modes.
* Burned-in annotation (Burned In Annotation YES, Recognizable Visual Features YES, a Secondary Capture
  without Burned In Annotation, or an overlay embedded in the pixel data) cannot be cleaned by this profile:
  such files fail the run, or are left out with ``skip_burned_in``.
* Non-DICOM files: a file named as an input must be DICOM (else :class:`InputError`); files found inside a
  folder that are not DICOM (READMEs, thumbnails, ``.DS_Store``) or are a DICOMDIR are skipped and listed in
  :attr:`DeidReport.skipped`.
* Damaged images: before anything is written, every file's pixel data is checked — its length against Rows ×
  Columns × Samples per Pixel × Bits Allocated × Number of Frames for native (uncompressed) transfer syntaxes, a
  full decode for compressed ones (:func:`pixel_data_problem`). A file that fails (or cannot be read as DICOM
  although it is one) is left out and listed in :attr:`DeidReport.skipped` with the reason, or the whole run is
  refused with ``strict``: copying a broken image into a research export only moves the failure downstream.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from MedAIExtension import __version__
from MedAIExtension.atomic import check_output_directory
from MedAIExtension.deid.inputs import _collect, _inspect_all, _summarise, burned_in_reason
from MedAIExtension.deid.profile import Action, ProfileTable, attribute_type, load_profile, resolve_action
from MedAIExtension.deid.uids import is_standard_uid, pseudonym, remap_uid
from MedAIExtension.errors import InputError, OutputError
from MedAIExtension.io.pixel_decoding import pixel_data_problem

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = [
    "DUMMY_DATE",
    "DeidOptions",
    "DeidReport",
    "burned_in_reason",
    "deidentify_dataset",
    "deidentify_files",
    "pixel_data_problem",
]

#: Dummy values written for action D (and for Type 1 attributes of the combined actions).
DUMMY_DATE = "19000101"
DUMMY_TIME = "000000"
DUMMY_TEXT = "ANONYMIZED"

#: UI attributes naming kinds of things (classes, syntaxes, coding schemes), not instances: never remapped.
_CLASS_UID_KEYWORDS = frozenset(
    {
        "SOPClassUID",
        "ReferencedSOPClassUID",
        "MediaStorageSOPClassUID",
        "ReferencedSOPClassUIDInFile",
        "AffectedSOPClassUID",
        "RequestedSOPClassUID",
        "RelatedGeneralSOPClassUID",
        "OriginalSpecializedSOPClassUID",
        "SOPClassesInStudy",
        "TransferSyntaxUID",
        "ReferencedTransferSyntaxUIDInFile",
        "ImplementationClassUID",
        "CodingSchemeUID",
        "MappingResourceUID",
        "ContextUID",
        "ContextGroupExtensionCreatorUID",
        "PrivateInformationCreatorUID",
    }
)
#: Concepts of SR TEXT items that identify people, places or devices (TID 1002/1004/1006/1008/1009 context).
_IDENTIFYING_TEXT_CONCEPTS = frozenset(
    {
        ("121009", "DCM"),  # Person Observer's Organization Name
        ("121012", "DCM"),  # Device Observer Serial Number
        ("121017", "DCM"),  # Device Observer Physical Location During Observation
        ("121030", "DCM"),  # Subject ID
        ("121041", "DCM"),  # Specimen Identifier
    }
)
#: Sequences of codes that identify a person (action D): their codes become dummies.
_PERSON_CODE_SEQUENCES = frozenset({"PersonIdentificationCodeSequence"})
_BIRTH_KEYWORDS = frozenset({"PatientBirthDate", "PatientBirthTime", "PatientBirthDateInAlternativeCalendar"})
_FILE_META_REMOVED = (
    "SourceApplicationEntityTitle",
    "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle",
    "SourcePresentationAddress",
    "SendingPresentationAddress",
    "ReceivingPresentationAddress",
    "PrivateInformationCreatorUID",
    "PrivateInformation",
)
_MAX_SHIFT_DAYS = 100 * 366


@dataclass
class DeidOptions:
    """Options of the de-identification.

    Attributes:
        date_shift_days: shift every date (DA, DT) by this many days instead of removing dates (keeps intervals
            and the order of studies; the Retain Longitudinal Temporal Information with Modified Dates Option).
            ``None`` = dates are handled by the Basic Profile (removed, emptied or a dummy).
        skip_burned_in: leave files with burned-in annotation out (listed in the report) instead of failing.
        keep_series_descriptions: keep Series Description (the profile removes it); use only when the
            descriptions are known to hold no identifying text, e.g. those MedAI writes.
        strict: refuse the whole run (nothing written) when a file is damaged — pixel data that is truncated or
            does not decode, or a DICOM file that cannot be read — instead of leaving it out of the export.
    """

    date_shift_days: int | None = None
    skip_burned_in: bool = False
    keep_series_descriptions: bool = False
    strict: bool = False

    def check(self) -> DeidOptions:
        """Validate the options; raises :class:`InputError` naming the fix."""
        days = self.date_shift_days
        if days is not None:
            if isinstance(days, bool) or not isinstance(days, int):
                raise InputError(f"date_shift_days must be a whole number of days, not {days!r}.")
            if days == 0:
                raise InputError(
                    "A date shift of 0 days keeps the real dates. Give a non-zero number of days, or leave the "
                    "shift out to remove dates as the Basic Profile does."
                )
            if abs(days) > _MAX_SHIFT_DAYS:
                raise InputError(f"date_shift_days {days} is more than 100 years; give a smaller shift.")
        return self


@dataclass
class DeidReport:
    """What :func:`deidentify_files` did.

    Attributes:
        written: the de-identified files, ``<output>/<study UID>/<series UID>/<SOP Instance UID>.dcm``.
        skipped: input files left out, each with the reason (not DICOM, DICOMDIR, burned-in annotation,
            duplicate instance, damaged pixel data or an unreadable DICOM file).
        uid_count: how many distinct UIDs were remapped.
        studies: how many studies were written.
    """

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    uid_count: int = 0
    studies: int = 0


# ---- one dataset ---------------------------------------------------------------------------------------------
class _Cleaner:
    """Applies the profile to one dataset, recursively; collects the UIDs it remapped."""

    def __init__(self, key: bytes, options: DeidOptions, table: ProfileTable, sop_class: str) -> None:
        self.key = key
        self.options = options
        self.table = table
        self.sop_class = sop_class
        self.remapped: set[str] = set()

    # -- values
    def uid(self, value: Any) -> Any:
        if value is None or value == "":
            return value
        if isinstance(value, list | tuple) or (hasattr(value, "__iter__") and not isinstance(value, str)):
            return [self.uid(v) for v in value]
        text = str(value).strip().rstrip("\0")
        if not text or is_standard_uid(text):
            return text
        self.remapped.add(text)
        return remap_uid(text, self.key)

    def shift(self, vr: str, value: Any) -> Any:
        days = int(self.options.date_shift_days or 0)
        values = list(value) if _is_multi(value) else [value]
        out = []
        for item in values:
            text = str(item or "").strip()
            if not text:
                out.append("")
                continue
            try:
                date = _dt.datetime.strptime(text[:8], "%Y%m%d").date() if len(text) >= 8 else None
            except ValueError:
                date = None
            if date is None:  # partial or malformed date: cannot be shifted exactly, so it goes
                out.append("")
                continue
            out.append((date + _dt.timedelta(days=days)).strftime("%Y%m%d") + (text[8:] if vr == "DT" else ""))
        return out if _is_multi(value) else out[0]

    # -- walking
    def clean(self, ds: Any, path: tuple[str, ...]) -> None:
        for tag in list(ds.keys()):
            elem = ds[tag]
            self.clean_element(ds, elem, path)
        if path and path[-1] in _PERSON_CODE_SEQUENCES:
            for keyword in ("CodeValue", "LongCodeValue", "URNCodeValue", "CodeMeaning"):
                if keyword in ds and ds[keyword].value:
                    setattr(ds, keyword, "urn:anonymized" if keyword == "URNCodeValue" else DUMMY_TEXT)
        if "ContentSequence" in path or "ValueType" in ds:
            self.clean_content_item(ds)

    def clean_content_item(self, item: Any) -> None:
        if str(item.get("ValueType", "")) != "TEXT" or not item.get("TextValue"):
            return
        names = item.get("ConceptNameCodeSequence") or []
        if names and (str(names[0].get("CodeValue", "")), str(names[0].get("CodingSchemeDesignator", ""))) in (
            _IDENTIFYING_TEXT_CONCEPTS
        ):
            item.TextValue = DUMMY_TEXT

    def clean_element(self, ds: Any, elem: Any, path: tuple[str, ...]) -> None:
        tag = elem.tag
        group = tag.group
        if tag.is_private or (group & 0xFF00) in (0x5000, 0x6000):
            del ds[tag]
            return
        keyword = elem.keyword or ""
        vr = str(elem.VR)
        action = self.table.action(int(tag))
        if keyword == "SeriesDescription" and self.options.keep_series_descriptions:
            action = Action.K
        shifting = self.options.date_shift_days is not None
        if shifting and vr in ("DA", "DT", "TM") and action is not Action.U and keyword not in _BIRTH_KEYWORDS:
            if vr != "TM" and elem.value not in (None, ""):
                elem.value = self.shift(vr, elem.value)
            return
        if action is None:
            action = Action.K
        else:
            action = resolve_action(action, attribute_type(self.sop_class, path, keyword) if keyword else None)
        if action is Action.X:
            del ds[tag]
            return
        if vr == "SQ":
            if action is Action.Z:
                elem.value = []
                return
            for item in elem.value:  # K, D, U*: keep the structure, clean every item
                self.clean(item, (*path, keyword))
            return
        if vr == "UI":
            if keyword not in _CLASS_UID_KEYWORDS and action is not Action.Z:
                elem.value = self.uid(elem.value)
            elif action is Action.Z:
                elem.value = ""
            return
        if action in (Action.K, Action.U_STAR, Action.U):
            return
        if _is_empty(elem.value):
            return
        if action is Action.Z:
            elem.value = _empty(vr)
        elif action is Action.D:
            elem.value = _dummy(vr)

    def run(self, ds: Any) -> None:
        self.clean(ds, ())


def _is_multi(value: Any) -> bool:
    return not isinstance(value, str | bytes) and hasattr(value, "__iter__")


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str | bytes):
        return len(value) == 0
    if _is_multi(value):
        return len(list(value)) == 0
    return False


def _empty(vr: str) -> Any:
    if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        return b""
    if vr in ("US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "AT", "IS", "DS"):
        return None
    return ""


def _dummy(vr: str) -> Any:
    if vr == "DA":
        return DUMMY_DATE
    if vr == "TM":
        return DUMMY_TIME
    if vr == "DT":
        return DUMMY_DATE + DUMMY_TIME
    if vr == "AS":
        return "000Y"
    if vr in ("IS", "DS"):
        return "0"
    if vr in ("US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"):
        return 0
    if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN", "AT"):
        return _empty(vr)
    if vr == "UR":
        return "urn:anonymized"
    return DUMMY_TEXT  # PN, LO, SH, LT, ST, UT, UC, CS, AE


def _method_codes(options: DeidOptions) -> list[tuple[str, str]]:
    codes = [("113100", "Basic Application Confidentiality Profile")]
    if options.date_shift_days is not None:
        codes.append(("113107", "Retain Longitudinal Temporal Information Modified Dates Option"))
    return codes


def _apply(ds: Any, key: bytes, options: DeidOptions) -> set[str]:
    """De-identify ``ds`` in place; return the original UIDs remapped."""
    from pydicom.dataset import Dataset

    reason = burned_in_reason(ds)
    if reason is not None:
        raise InputError(
            f"This object may carry identifying burned-in text ({reason}), which the Basic Profile cannot remove. "
            "Leave it out (skip_burned_in=True / --skip-burned-in) or clean its pixels first."
        )
    table = load_profile()
    patient = str(ds.get("PatientID", "") or "").strip() or str(ds.get("PatientName", "") or "").strip()
    cleaner = _Cleaner(key, options, table, str(ds.get("SOPClassUID", "")))
    cleaner.run(ds)
    alias = pseudonym(patient, key) if patient else pseudonym("(no patient identifier)", key)
    ds.PatientID = alias
    ds.PatientName = alias
    ds.PatientIdentityRemoved = "YES"
    methods = [
        "PS3.15 Basic Application Confidentiality Profile",
        f"MedAI {__version__} table {table.version}",
    ]
    if options.date_shift_days is not None:
        methods.append("dates shifted")
    if options.keep_series_descriptions:
        methods.append("series descriptions kept")
    ds.DeidentificationMethod = methods
    items = []
    for value, meaning in _method_codes(options):
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = items
    ds.LongitudinalTemporalInformationModified = "MODIFIED" if options.date_shift_days is not None else "REMOVED"
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for keyword in _FILE_META_REMOVED:
            if keyword in meta:
                delattr(meta, keyword)
        if "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if "SOPClassUID" in ds:
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
    return cleaner.remapped


def deidentify_dataset(ds: Dataset, key: bytes, options: DeidOptions | None = None) -> Dataset:
    """De-identify one dataset in place with the PS3.15 Basic Profile (see the module docstring).

    Args:
        ds: a pydicom ``Dataset`` (a ``FileDataset``'s file meta is updated too).
        key: the secret key of the UID map and the pseudonyms (see :func:`~MedAIExtension.deid.uids.load_key`).
        options: date shift and the other options; ``None`` = the defaults.

    Returns:
        ``ds``, de-identified.

    Raises:
        InputError: the object has burned-in annotation (whatever ``skip_burned_in`` says: one dataset cannot
            be skipped; :func:`deidentify_files` does the skipping), an option is invalid, or the key is too
            short.
    """
    options = (options or DeidOptions()).check()
    _apply(ds, key, options)
    return ds


def deidentify_files(
    inputs: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    key: bytes,
    options: DeidOptions | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> DeidReport:
    """De-identify DICOM files and folders (recursively) into ``output_dir``.

    All inputs are checked before anything is written, pixel data included (:func:`pixel_data_problem`;
    damaged files are skipped, or refused with ``options.strict``). The files are staged in a hidden folder inside
    ``output_dir`` and moved into place (``<output>/<study UID>/<series UID>/<SOP Instance UID>.dcm``) at the
    end; on any error nothing is left (and ``output_dir`` is removed again if this call created it). Files
    already in ``output_dir`` (an earlier run) are kept; an instance written again with the same key replaces
    its earlier copy.

    Args:
        inputs: DICOM files and folders (searched recursively).
        output_dir: where the de-identified files go; must not lie inside an input folder.
        key: the secret key (same key → same UIDs and pseudonyms as in earlier runs).
        options: date shift, burned-in handling, series descriptions.
        progress: receives ``(fraction, message)``.

    Returns:
        What was written and what was skipped.

    Raises:
        InputError: a missing input, a named file that is not DICOM, no DICOM file at all, the output inside
            an input folder, files with burned-in annotation (without ``skip_burned_in``), damaged files (with
            ``strict``), a bad option.
        OutputError: the output folder cannot be written.
    """
    import pydicom

    options = (options or DeidOptions()).check()
    report_progress = progress or (lambda _fraction, _message: None)
    output = Path(output_dir).resolve()
    candidates = _collect(inputs, output)
    report = DeidReport()
    bad: list[tuple[Path, str]] = []
    burned: list[tuple[Path, str]] = []
    accepted: list[Path] = []
    first_of: dict[str, Path] = {}
    damaged: list[tuple[Path, str]] = []
    inspections = _inspect_all([c.path for c in candidates])
    for number, (candidate, found) in enumerate(zip(candidates, inspections, strict=True)):
        report_progress(0.2 * number / max(len(candidates), 1), "Checking inputs")
        if found.problem is not None:
            if found.damaged or (found.unreadable and not candidate.explicit):
                damaged.append((candidate.path, found.problem))
            else:
                (bad if candidate.explicit else report.skipped).append((candidate.path, found.problem))
            continue
        if found.burned_in is not None:
            burned.append((candidate.path, found.burned_in))
            continue
        sop = str(found.sop_instance_uid)
        if sop in first_of:
            report.skipped.append((candidate.path, f"same SOP Instance UID as {first_of[sop]}"))
            continue
        first_of[sop] = candidate.path
        accepted.append(candidate.path)
    if bad:
        details = "; ".join(f"{p} ({why})" for p, why in bad[:8])
        raise InputError(
            f"{len(bad)} input file(s) cannot be de-identified: {details}. Give DICOM files, or a folder (files in "
            "a folder that are not DICOM are skipped)."
        )
    if damaged:
        if options.strict:
            details = "; ".join(f"{p} ({why})" for p, why in damaged[:3])
            more = f" and {len(damaged) - 3} more" if len(damaged) > 3 else ""
            raise InputError(
                f"{len(damaged)} file(s) are damaged: {details}{more}. Nothing was written (--strict). Export them "
                "again from the PACS or scanner, or run without --strict to leave them out of the export."
            )
        report.skipped.extend(damaged)
    if burned:
        if not options.skip_burned_in:
            raise InputError(
                f"{len(burned)} file(s) may show identifying burned-in text, which the Basic Profile cannot remove: "
                f"{_summarise([p for p, _ in burned])} ({burned[0][1]}). Nothing was written. Leave them out with "
                "--skip-burned-in (skip_burned_in=True), or clean their pixels first."
            )
        report.skipped.extend((p, f"burned-in annotation: {why}") for p, why in burned)
    if not accepted:
        left_out = ""
        if report.skipped:
            path, why = report.skipped[0]
            left_out = f" ({len(report.skipped)} file(s) left out, e.g. {path}: {why})"
        raise InputError(
            f"No DICOM file to de-identify was found in {_summarise([Path(p) for p in inputs])}{left_out}. "
            "Point the command at DICOM files or folders holding them."
        )
    check_output_directory(output)
    created: list[Path] = []
    probe = output
    while not probe.exists():
        created.append(probe)
        probe = probe.parent
    moved: list[Path] = []
    staging: Path | None = None
    uids: set[str] = set()
    studies: set[str] = set()
    try:
        try:
            output.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=output, prefix=".medai-deid-"))
        except OSError as exc:
            raise OutputError(
                f"Cannot write to the output folder {output} ({exc.strerror or exc}). Choose a writable folder."
            ) from None
        staged: list[Path] = []
        for number, path in enumerate(accepted):
            report_progress(0.2 + 0.75 * number / len(accepted), f"De-identifying {path.name}")
            ds = pydicom.dcmread(path)
            try:
                uids |= _apply(ds, key, options)
            except InputError as exc:
                raise InputError(f"{path}: {exc}") from None
            relative = Path(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), f"{ds.SOPInstanceUID}.dcm")
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                ds.save_as(target, enforce_file_format=True)
            except OSError as exc:
                raise OutputError(
                    f"Cannot write {target} ({exc.strerror or exc}). Free space or choose another folder."
                ) from None
            staged.append(relative)
            studies.add(str(ds.StudyInstanceUID))
        report_progress(0.95, "Moving the files into place")
        for relative in staged:
            final = output / relative
            for parent in reversed(relative.parents):
                folder = output / parent
                if not folder.exists():
                    folder.mkdir()
                    created.insert(0, folder)
            os.replace(staging / relative, final)
            moved.append(final)
    except BaseException:
        for path in moved:
            with contextlib.suppress(OSError):
                path.unlink()
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        for folder in created:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    shutil.rmtree(staging, ignore_errors=True)
    report.written = moved
    report.uid_count = len(uids)
    report.studies = len(studies)
    report_progress(1.0, "Done")
    return report
