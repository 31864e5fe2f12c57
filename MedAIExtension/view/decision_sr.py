"""Exporting a reader's decisions on an AI result as a DICOM Comprehensive SR that references the result.

Why a Comprehensive SR (and not a Key Object Selection or an amendment of an SR):

* A Key Object Selection (KOS) only lists instances under one document title and one free-text description. It
  cannot say *which segment* of a SEG was accepted, nor carry a reader, a time and a comment per finding. Its
  titles are also dangerous here: "Rejected for Quality Reasons" (DCM 113001) is the IHE *Rejected Instances*
  signal, on which a PACS hides or deletes the referenced SEG — the opposite of keeping a rejected AI result on
  record.
* An SR amendment only applies when the AI result is itself an SR (the tracking SR); a segmentation result is a
  DICOM SEG, and the decisions must not change the AI's own report.
* A Comprehensive SR holds any tree of containers, codes, texts and image references (a reference to a SEG
  names the segment by ReferencedSegmentNumber) with an observer context (the reader) and an Observation
  DateTime per content item; nothing here needs spatial coordinates, so not the 3D variant.

The content tree (no standard template fits a review of an AI result; the decision codes are MedAI's private
``99MEDAI`` codes, declared in the Coding Scheme Identification Sequence; the others are DICOM's)::

    CONTAINER  (99MEDAI, AIREVIEW, "Reader review of AI result")
      HAS OBS CONTEXT  the exporting reader (TID 1002: Observer Type = Person, Person Observer Name)
      CONTAINS COMPOSITE (99MEDAI, AIRESULT, "Reviewed AI result") -> the DICOM SEG (an explanation: its Parametric
                                                                     Map), when the result has one
      CONTAINS CONTAINER (99MEDAI, STUDYREVIEW, "Review of the whole study")          one, when decided
      CONTAINS CONTAINER (99MEDAI, FINDINGREVIEW, "Review of an AI finding")          one per finding
        CONTAINS TEXT  (DCM, 112039, "Tracking Identifier") = the finding id
        CONTAINS IMAGE (DCM, 121191, "Referenced Segment") -> the SEG segment of that name or number, if any
        CONTAINS CODE  (99MEDAI, DECISION, "Reader decision") = ACCEPTED / REJECTED / COMMENTED   the current one
        CONTAINS CONTAINER (99MEDAI, DECISIONENTRY, "Reader decision entry")   one per record, oldest first;
                 its ObservationDateTime is when the reader decided
          HAS OBS CONTEXT  the reader (Person; login name = the reader as stored)
          CONTAINS CODE  (99MEDAI, DECISION, "Reader decision")
          CONTAINS TEXT  (DCM, 121106, "Comment"), when there is one

The SR joins the study of the SEG (or of ``source``); the SEG and the source images are its evidence. Only the
decisions on the result the folder now holds (same SEG SOPInstanceUID, or none recorded) are exported.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from MedAIExtension import __version__
from MedAIExtension.atomic import save_dataset
from MedAIExtension.dicom.parametric_map import PARAMETRIC_MAP_STORAGE
from MedAIExtension.dicom.source import load_source_datasets
from MedAIExtension.dicom.sr.codes import _SEG_SOP_CLASSES, PRIVATE_SCHEME
from MedAIExtension.dicom.values import coded_concept
from MedAIExtension.errors import InputError, OutputError
from MedAIExtension.io.dicom_series import read_dicom_series
from MedAIExtension.io.image import Image
from MedAIExtension.labels import CodedTerm
from MedAIExtension.review.store.decisions import DecisionRecord, DecisionStore, check_reader

__all__ = ["DECISION_CODES", "SEG_FILE", "SrEntry", "SrSubject", "read_decision_sr", "write_decision_sr"]

#: The AI result a decision SR references, inside the result folder.
SEG_FILE = "segmentation.dcm"

_ROOT = CodedTerm("AIREVIEW", PRIVATE_SCHEME, "Reader review of AI result")
_RESULT = CodedTerm("AIRESULT", PRIVATE_SCHEME, "Reviewed AI result")
_STUDY = CodedTerm("STUDYREVIEW", PRIVATE_SCHEME, "Review of the whole study")
_FINDING = CodedTerm("FINDINGREVIEW", PRIVATE_SCHEME, "Review of an AI finding")
_ENTRY = CodedTerm("DECISIONENTRY", PRIVATE_SCHEME, "Reader decision entry")
_DECISION = CodedTerm("DECISION", PRIVATE_SCHEME, "Reader decision")
_TRACKING_ID = CodedTerm("112039", "DCM", "Tracking Identifier")
_SEGMENT = CodedTerm("121191", "DCM", "Referenced Segment")
_COMMENT = CodedTerm("121106", "DCM", "Comment")
_LOGIN = CodedTerm("128774", "DCM", "Person Observer's Login Name")

#: The coded value of each decision (concept name ``(99MEDAI, DECISION, "Reader decision")``).
DECISION_CODES: dict[str, CodedTerm] = {
    "accepted": CodedTerm("ACCEPTED", PRIVATE_SCHEME, "Accepted by the reader"),
    "rejected": CodedTerm("REJECTED", PRIVATE_SCHEME, "Rejected by the reader"),
    "commented": CodedTerm("COMMENTED", PRIVATE_SCHEME, "Commented, no verdict"),
}


def _local_offset() -> dt.tzinfo:
    """This machine's current UTC offset: the SR's Timezone Offset From UTC, which its DT values are in."""
    offset = dt.datetime.now().astimezone().utcoffset()
    return dt.timezone(offset or dt.timedelta(0))


def _dicom_datetime(iso: str, zone: dt.tzinfo) -> str:
    """A stored UTC ISO time as a DICOM DT in ``zone`` (``YYYYMMDDHHMMSS.ffffff``, no offset suffix: dcmtk's SR
    checker refuses one; the SR's Timezone Offset From UTC says the zone)."""
    moment = dt.datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(zone).strftime("%Y%m%d%H%M%S.%f")


def _person(reader: str) -> list[Any]:
    """TID 1002 observer context items for ``reader`` (a name without ``^`` becomes the family name)."""
    import highdicom as hd

    name = reader if "^" in reader else f"{reader}^"
    context = hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121006", "DCM", "Person"),
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=name, login_name=reader),
    )
    return list(context)


def _container(term: CodedTerm, children: Sequence[Any]) -> Any:
    import highdicom as hd

    container = hd.sr.ContainerContentItem(
        name=coded_concept(term), is_content_continuous=False, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = hd.sr.ContentSequence(list(children))
    return container


def _code(name: CodedTerm, value: CodedTerm) -> Any:
    import highdicom as hd

    return hd.sr.CodeContentItem(
        name=coded_concept(name), value=coded_concept(value), relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )


def _text(name: CodedTerm, value: str) -> Any:
    import highdicom as hd

    return hd.sr.TextContentItem(
        name=coded_concept(name), value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )


def _entry(record: DecisionRecord, zone: dt.tzinfo) -> Any:
    children = [*_person(record.reader), _code(_DECISION, DECISION_CODES[record.decision])]
    if record.comment:
        children.append(_text(_COMMENT, record.comment))
    entry = _container(_ENTRY, children)
    entry.ObservationDateTime = _dicom_datetime(record.time, zone)
    return entry


def _subject(
    term: CodedTerm,
    finding_id: str,
    records: list[DecisionRecord],
    current: DecisionRecord,
    seg: Any,
    zone: dt.tzinfo,
) -> Any:
    import highdicom as hd

    children = []
    if finding_id:
        children.append(_text(_TRACKING_ID, finding_id))
        number = _segment_number(seg, finding_id)
        if number is not None:
            children.append(
                hd.sr.ImageContentItem(
                    name=coded_concept(_SEGMENT),
                    referenced_sop_class_uid=str(seg.SOPClassUID),
                    referenced_sop_instance_uid=str(seg.SOPInstanceUID),
                    referenced_segment_numbers=number,
                    relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
                )
            )
    children.append(_code(_DECISION, DECISION_CODES[current.decision]))
    children.extend(_entry(record, zone) for record in records)
    return _container(term, children)


def _segment_number(seg: Any, finding_id: str) -> int | None:
    """The SEG segment whose label (case-insensitive) or number is ``finding_id``."""
    if seg is None:
        return None
    wanted = finding_id.strip().lower()
    for segment in seg.get("SegmentSequence", []):
        if wanted in (str(segment.get("SegmentLabel", "")).strip().lower(), str(segment.SegmentNumber)):
            return int(segment.SegmentNumber)
    return None


def _load_seg(path: Path) -> Any:
    import pydicom

    try:
        seg = pydicom.dcmread(path, stop_before_pixels=True)
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise InputError(f"Cannot read the AI result's DICOM SEG {path} ({exc}); write the result again.") from None
    if str(seg.get("SOPClassUID", "")) not in (*_SEG_SOP_CLASSES, PARAMETRIC_MAP_STORAGE):
        raise InputError(
            f"{path} is not a DICOM Segmentation (or an explanation's Parametric Map); the result folder's "
            f"{SEG_FILE} must be one."
        )
    return seg


def _source_datasets(source: Image | str | os.PathLike[str] | None, seg: Any) -> list[Any]:
    if source is None:
        return []
    image = source if isinstance(source, Image) else read_dicom_series(source)
    datasets = load_source_datasets(image, "decision SR")
    if seg is not None and str(datasets[0].StudyInstanceUID) != str(seg.StudyInstanceUID):
        raise InputError(
            f"The source series belongs to study {datasets[0].StudyInstanceUID}, the AI result's SEG to study "
            f"{seg.StudyInstanceUID}; give the DICOM series the result was computed from."
        )
    return datasets


def write_decision_sr(
    store: DecisionStore,
    result_folder: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    source: Image | str | os.PathLike[str] | None = None,
    author: str | None = None,
    series_number: int = 401,
    series_description: str = "MedAI reader decisions",
    manufacturer: str = "MedAI",
    seg_name: str = SEG_FILE,
) -> Path:
    """Write the decisions of ``store`` on the AI result in ``result_folder`` as a DICOM Comprehensive SR.

    Each decided finding and the study get the current decision and every decision entry (reader, time, comment);
    see the module docstring for the content tree. The SR joins the study of the result's DICOM SEG
    (``segmentation.dcm``) or, for a result without one, of ``source``. Written atomically.

    Args:
        store: the result's decisions (:meth:`DecisionStore.for_result`).
        result_folder: the result folder (its ``segmentation.dcm`` is referenced when present).
        path: the SR file to write (``.dcm``).
        source: the DICOM series the result was computed from (an image read with
            :func:`~MedAIExtension.io.dicom_series.read_dicom_series`, or its folder); listed as evidence.
            Required when the result has no DICOM SEG.
        author: the person exporting (the document's observer); default the reader of the latest decision.
        series_number: SeriesNumber of the SR series.
        series_description: SeriesDescription of the SR series.
        manufacturer: Manufacturer of the software writing the SR.
        seg_name: the result's DICOM SEG in ``result_folder`` (``followup_seg.dcm`` for a tracking result).

    Returns:
        The written path.

    Raises:
        InputError: no decision on this result, no DICOM to join (no SEG and no ``source``), an unreadable SEG, a
            source from another study, or an invalid author name.
        OutputError: the file cannot be written.
    """
    import highdicom as hd
    from highdicom.coding_schemes import CodingSchemeIdentificationItem

    folder = Path(result_folder).expanduser()
    target = Path(path).expanduser()
    if not folder.is_dir():
        raise InputError(f"The result folder {folder} does not exist; give the folder the decisions are about.")
    seg_path = folder / seg_name
    seg = _load_seg(seg_path) if seg_path.is_file() else None
    if seg is None and source is None:
        raise InputError(
            f"The result folder {folder} has no DICOM SEG or Parametric Map ({seg_name}), so the SR has no study to "
            "join. Give source= the DICOM series the result was computed from, or write the result as DICOM "
            "(medai segment --format dicom-seg; medai explain without --no-dicom)."
        )
    reference = str(seg.SOPInstanceUID) if seg is not None else ""
    history = store.history(result_ref=reference if seg is not None else None)
    if not history:
        raise InputError(
            f"No decision was recorded on the AI result in {folder}; accept, reject or comment a finding first."
        )
    writer = check_reader(author if author is not None else history[-1].reader)
    if not target.parent.is_dir():
        raise OutputError(f"The folder {target.parent} does not exist; create it or choose another output path.")
    evidence = [*([seg] if seg is not None else []), *_source_datasets(source, seg)]

    zone = _local_offset()
    current = store.latest(result_ref=reference if seg is not None else None)
    children: list[Any] = [*_person(writer)]
    if seg is not None:
        children.append(
            hd.sr.CompositeContentItem(
                name=coded_concept(_RESULT),
                referenced_sop_class_uid=str(seg.SOPClassUID),
                referenced_sop_instance_uid=reference,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    for (scope, finding_id), record in sorted(current.items(), key=lambda item: item[0][0] != "study"):
        records = [r for r in history if (r.scope, r.finding_id) == (scope, finding_id)]
        term = _STUDY if scope == "study" else _FINDING
        children.append(_subject(term, finding_id, records, record, seg, zone))
    root = hd.sr.ContainerContentItem(name=coded_concept(_ROOT), is_content_continuous=False)
    root.ContentSequence = hd.sr.ContentSequence(children)

    sr = hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=root,
        series_instance_uid=hd.UID(),
        series_number=int(series_number),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=manufacturer[:64],
        is_complete=True,
        series_description=series_description[:64],
        coding_schemes=[
            CodingSchemeIdentificationItem(
                designator=PRIVATE_SCHEME, name="MedAI private codes", responsible_organization="MedAI"
            )
        ],
        specific_character_set="ISO_IR 192",  # UTF-8: readers' names and comments
        software_versions=f"MedAI {__version__}"[:64],
    )
    sr.TimezoneOffsetFromUTC = dt.datetime.now(zone).strftime("%z")
    return save_dataset(sr, target, "decision SR")


# ---- reading back -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SrEntry:
    """One decision entry of a decision SR: what, who (the login name, as stored), when (DICOM DT) and why."""

    decision: str
    reader: str
    time: str
    comment: str


@dataclass(frozen=True)
class SrSubject:
    """The study or one finding in a decision SR: its current decision, its SEG segment and every entry."""

    scope: str
    finding_id: str
    decision: str
    segment_number: int | None
    entries: tuple[SrEntry, ...]


def _is(item: Any, term: CodedTerm) -> bool:
    name = item.ConceptNameCodeSequence[0]
    return (str(name.CodeValue), str(name.CodingSchemeDesignator)) == (term.value, term.scheme)


def _decision_of(item: Any) -> str:
    value = str(item.ConceptCodeSequence[0].CodeValue)
    return next(key for key, code in DECISION_CODES.items() if code.value == value)


def _read_subject(container: Any) -> SrSubject:
    finding_id, decision, segment, entries = "", "", None, []
    for item in container.ContentSequence:
        if _is(item, _TRACKING_ID):
            finding_id = str(item.TextValue)
        elif _is(item, _SEGMENT):
            segment = int(item.ReferencedSOPSequence[0].ReferencedSegmentNumber)
        elif _is(item, _DECISION):
            decision = _decision_of(item)
        elif _is(item, _ENTRY):
            fields = {"decision": "", "reader": "", "comment": ""}
            for child in item.ContentSequence:
                if _is(child, _DECISION):
                    fields["decision"] = _decision_of(child)
                elif _is(child, _COMMENT):
                    fields["comment"] = str(child.TextValue)
                elif _is(child, _LOGIN):
                    fields["reader"] = str(child.TextValue)
            entries.append(SrEntry(time=str(item.get("ObservationDateTime", "")), **fields))
    scope = "study" if _is(container, _STUDY) else "finding"
    return SrSubject(scope, finding_id, decision, segment, tuple(entries))


def read_decision_sr(path: str | os.PathLike[str]) -> list[SrSubject]:
    """The study and findings of a decision SR written by :func:`write_decision_sr`, in the SR's order.

    Raises:
        InputError: the file is not a readable decision SR.
    """
    import pydicom

    try:
        sr = pydicom.dcmread(Path(path))
        root = sr.ContentSequence if _is(sr, _ROOT) else None
    except (OSError, pydicom.errors.InvalidDicomError, AttributeError, IndexError) as exc:
        raise InputError(f"Cannot read {path} as a MedAI decision SR ({exc}).") from None
    if root is None:
        raise InputError(f"{path} is not a MedAI decision SR (its root is not {_ROOT.meaning!r}).")
    try:
        return [_read_subject(item) for item in root if _is(item, _STUDY) or _is(item, _FINDING)]
    except (AttributeError, IndexError, StopIteration, ValueError) as exc:
        raise InputError(f"The decision SR {path} is malformed ({exc!r}); export it again.") from None
