"""The MedAI report as an HL7 v2.5.1 ORU^R01 message (unsolicited observation result) a RIS can take.

Segments, in the order of the ORU_R01 structure::

    MSH  header: MEDAI sends ORU^R01^ORU_R01, version 2.5.1, character set UNICODE UTF-8 (MSH-18)
    SFT  the MedAI software and version
    PID  patient ID (PID-3, type MR), name (PID-5: DICOM PN Family^Given^Middle^Prefix^Suffix mapped to XPN
         Family^Given^Middle^Suffix^Prefix), birth date (PID-7), sex (PID-8: M, F, O, else U), from the DICOM header
    ORC  RE; placer (ORC-2) and filler (ORC-3) order number = the study's AccessionNumber; ORC-5 "A" (some results
         available: preliminary); ORC-7.6 priority
    OBR  the same order numbers; OBR-4 universal service ID; OBR-5 priority; OBR-7 StudyDate/StudyTime; OBR-22 the
         report time; OBR-24 "CT"; OBR-25 result status "P" (preliminary); OBR-27.6 priority
    NTE  the disclaimer "PRELIMINARY - AI, NOT VERIFIED"
    TQ1  TQ1-9 priority (HL7 table 0485), where v2.5.1 keeps it besides the legacy OBR-5 / ORC-7
    OBX  HD: StudyInstanceUID (113014^DICOM Study^DCM); CE: exam Lung-RADS category; TX: its management;
         NM: reading priority 1..5; ST: the AI model and version; per nodule (OBX-4 = tracking ID, e.g. ``N1``):
         ST status and location, NM mean diameter (mm) and volume (mm3) in UCUM units, NM volume doubling time (d)
         when growth is reported, ST growth in words, CE Lung-RADS category; then one TX per line of the
         plain-text report (:func:`MedAIExtension.interop.report_text.tracking_report_text`).
         Every OBX has result status OBX-11 "P".

**Priority** (MedAI's triage 1 urgent .. 5 routine, :mod:`MedAIExtension.interop.triage`) maps to the HL7 priority
codes of OBR-5, ORC-7.6, OBR-27.6 and TQ1-9: 1 → ``S`` (stat), 2 → ``A`` (ASAP), 3, 4 and 5 → ``R`` (routine); the
exact 1..5 value is also sent (OBX ``MEDAI-PRIORITY``), so a RIS can sort more finely than S/A/R.

Text taken from DICOM or the report is escaped for HL7 (``|`` → ``\\F\\``, ``^`` → ``\\S\\``, ``&`` → ``\\T\\``,
``~`` → ``\\R\\``, ``\\`` → ``\\E\\``, line breaks → ``\\.br\\``), so a name such as ``O|Brien&Co`` cannot break the
message. Non-ASCII characters are sent as UTF-8 (declared in MSH-18): ``hl7.util.escape`` would turn them into
``\\Xhhhh\\`` sequences of Unicode code points, which HL7 (hex of the encoded bytes) and RIS parsers do not read.
Codes MedAI defines use the local coding system ``99MEDAI`` (Lung-RADS categories: ``99LR2022``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from MedAIExtension import __version__
from MedAIExtension.errors import InputError, MedAIError
from MedAIExtension.interop.report_text import (
    DEFAULT_MODEL,
    DEFAULT_MODEL_VERSION,
    PRELIMINARY,
    ReportContent,
    content_of,
    report_lines,
)
from MedAIExtension.interop.study_header import StudyHeader
from MedAIExtension.interop.triage import Triage
from MedAIExtension.tracking.results import StudyResult, TrackingResult

__all__ = ["HL7_PRIORITY", "LOCAL_CODES", "build_oru", "hl7_escape", "hl7_priority"]

#: MedAI reading priority (1..5) → HL7 priority code (OBR-5, ORC-7.6, TQ1-9; HL7 table 0485) and its text.
HL7_PRIORITY: dict[int, tuple[str, str]] = {1: ("S", "Stat"), 2: ("A", "ASAP"), 3: ("R", "Routine"),
                                            4: ("R", "Routine"), 5: ("R", "Routine")}  # fmt: skip
#: The local coding system of MedAI's observation identifiers.
LOCAL_CODES = "99MEDAI"
_LUNG_RADS_CODES = "99LR2022"
_SERVICE = ("MEDAI-LUNG", "CT chest lung nodule assessment (AI)", LOCAL_CODES)
_UNITS = {"mm": "mm^millimeter^UCUM", "mm3": "mm3^cubic millimeter^UCUM", "d": "d^day^UCUM"}
_ESCAPES = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"}


def hl7_escape(text: object) -> str:
    """``text`` safe inside one HL7 component: delimiters escaped, line breaks as ``\\.br\\``, other control
    characters dropped (the default delimiters ``|^~\\&`` of MSH-1/MSH-2)."""
    value = str(text).replace("\r\n", "\n").replace("\r", "\n")
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch == "\n":
            out.append("\\.br\\")
        elif ord(ch) >= 0x20 and ch != "\x7f":
            out.append(ch)
    return "".join(out)


def hl7_priority(triage: Triage) -> tuple[str, str]:
    """The HL7 priority code and text (``("S", "Stat")``, ``("A", "ASAP")`` or ``("R", "Routine")``) of a triage."""
    return HL7_PRIORITY[triage.priority]


def _components(*values: object) -> str:
    """One field of components, each escaped; trailing empty components dropped."""
    parts = [hl7_escape(v) if v is not None else "" for v in values]
    while parts and not parts[-1]:
        parts.pop()
    return "^".join(parts)


def _segment(name: str, fields: Sequence[str]) -> str:
    """``name|field1|field2...`` with trailing empty fields dropped (fields already escaped)."""
    items = list(fields)
    while items and not items[-1]:
        items.pop()
    return "|".join([name, *items])


def _xpn(dicom_name: str) -> str:
    """A DICOM PN (``Family^Given^Middle^Prefix^Suffix``, first component group) as an HL7 XPN."""
    parts = dicom_name.split("=")[0].split("^")
    family, given, middle, prefix = (parts + [""] * 4)[:4]
    suffix = "^".join(parts[4:])  # a fifth component, and any stray ones after it, stay one (escaped) suffix
    return _components(family, given, middle, suffix, prefix)


def _hl7_date(value: str) -> str:
    return value if len(value) == 8 and value.isdigit() else ""


def _sex(value: str) -> str:
    return value if value in ("M", "F", "O") else "U"


def _order_numbers(header: StudyHeader) -> tuple[str, str]:
    """(placer, filler) order numbers: the AccessionNumber for both; without one, the StudyInstanceUID as filler."""
    if header.accession_number:
        number = _components(header.accession_number)
        return number, number
    if header.study_uid:
        return "", _components(header.study_uid, "DICOM")
    raise InputError(
        "The study has neither an AccessionNumber nor a StudyInstanceUID, so a RIS cannot match the ORU to its "
        "order; pass the study's DICOM header (dataset=) or read the study from DICOM."
    )


def _obx(rows: list[str], value_type: str, code: tuple[str, str], sub_id: str, value: str, units: str = "") -> None:
    """Append one OBX (``value`` already escaped), status P."""
    identifier = _components(code[0], code[1], LOCAL_CODES)
    fields = [str(len(rows) + 1), value_type, identifier, hl7_escape(sub_id), value, units, "", "", "", "", "P"]
    rows.append(_segment("OBX", fields))


def _nodule_obx(rows: list[str], content: ReportContent) -> None:
    for nodule in content.nodules:
        sub = nodule.tracking_id
        status = nodule.status if nodule.mean_diameter_mm is not None else "resolved (not seen on this study)"
        _obx(
            rows, "ST", ("NODULE-STATUS", "Nodule status"), sub, hl7_escape(f"{nodule.kind} {nodule.finding}, {status}")
        )
        if nodule.mean_diameter_mm is None:
            continue
        if nodule.location:
            _obx(rows, "ST", ("NODULE-LOCATION", "Nodule location"), sub, hl7_escape(nodule.location))
        _obx(
            rows, "NM", ("NODULE-DIAMETER", "Nodule mean diameter"), sub, f"{nodule.mean_diameter_mm:.1f}", _UNITS["mm"]
        )
        if nodule.volume_mm3 is not None:
            _obx(rows, "NM", ("NODULE-VOLUME", "Nodule volume"), sub, f"{nodule.volume_mm3:.0f}", _UNITS["mm3"])
        if nodule.vdt_days is not None:
            _obx(rows, "NM", ("NODULE-VDT", "Volume doubling time"), sub, f"{nodule.vdt_days:.0f}", _UNITS["d"])
        growth = nodule.growth or "no prior study for comparison"
        _obx(rows, "ST", ("NODULE-GROWTH", "Nodule change since prior"), sub, hl7_escape(growth))
        if nodule.lung_rads:
            value = _components(nodule.lung_rads, f"Lung-RADS {nodule.lung_rads}", _LUNG_RADS_CODES)
            _obx(rows, "CE", ("NODULE-LUNGRADS", "Nodule Lung-RADS v2022 category"), sub, value)


def _observations(content: ReportContent) -> list[str]:
    rows: list[str] = []
    if content.header.study_uid:
        identifier = _components("113014", "DICOM Study", "DCM")
        rows.append(
            _segment("OBX", ["1", "HD", identifier, "", hl7_escape(content.header.study_uid)] + [""] * 5 + ["P"])
        )
    category = content.exam_lung_rads
    value = _components(category, f"Lung-RADS {category}", _LUNG_RADS_CODES)
    _obx(rows, "CE", ("LUNGRADS-EXAM", "Lung-RADS v2022 exam category"), "", value)
    _obx(rows, "TX", ("LUNGRADS-MANAGEMENT", "Lung-RADS v2022 management"), "", hl7_escape(content.management))
    _obx(
        rows,
        "NM",
        ("MEDAI-PRIORITY", "MedAI reading priority (1 urgent - 5 routine)"),
        "",
        str(content.triage.priority),
    )
    model = f"{content.model} version {content.model_version}"
    _obx(rows, "ST", ("AI-MODEL", "AI model and version"), "", hl7_escape(model))
    _nodule_obx(rows, content)
    for line in report_lines(content):
        _obx(rows, "TX", ("REPORT-TEXT", "MedAI report text"), "", hl7_escape(line))
    return rows


def build_oru(
    result: TrackingResult | StudyResult | ReportContent,
    *,
    dataset: Any | None = None,
    triage: Triage | None = None,
    model: str = DEFAULT_MODEL,
    model_version: str = DEFAULT_MODEL_VERSION,
    sending_application: str = "MEDAI",
    sending_facility: str = "",
    receiving_application: str = "",
    receiving_facility: str = "",
    control_id: str | None = None,
    processing_id: str = "P",
    now: dt.datetime | None = None,
) -> str:
    """The ORU^R01 (HL7 v2.5.1) of ``result``'s current study, segments joined by ``"\\r"`` (see the module).

    Args:
        result: a :class:`TrackingResult`, :class:`StudyResult`, or the :class:`ReportContent` of one
            (:func:`report_content`; then ``dataset``, ``triage``, ``model`` and ``model_version`` are not used).
        dataset: a pydicom dataset of the study for PID/ORC/OBR; default: the first source file of its image.
        triage: the reading priority (default: the gateway's priority for the exam's Lung-RADS category).
        model, model_version: the AI named in the report.
        sending_application ... receiving_facility: MSH-3 to MSH-6.
        control_id: MSH-10 (default: a new unique 20-character ID); the receiver's ACK must echo it.
        processing_id: MSH-11, ``P`` (production), ``T`` (training) or ``D`` (debugging).
        now: the message time (default: now, UTC).

    Raises:
        InputError: the study has no PatientID, or neither AccessionNumber nor StudyInstanceUID; a bad
            ``processing_id`` or ``control_id``; ``result`` is not a nodule result.
    """
    import hl7

    content = content_of(result, dataset=dataset, model=model, model_version=model_version, triage=triage)
    header = content.header
    if not header.patient_id:
        raise InputError(
            "The study has no PatientID, which the ORU's PID-3 needs; pass the study's DICOM header (dataset=) or "
            "read the study from DICOM."
        )
    if processing_id not in ("P", "T", "D"):
        raise InputError(f"processing_id must be P, T or D, got {processing_id!r}.")
    control = control_id if control_id is not None else hl7.generate_message_control_id()
    if not control or hl7_escape(control) != control or len(control) > 199:
        raise InputError(f"The message control ID must be 1-199 characters without HL7 delimiters, got {control!r}.")
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime("%Y%m%d%H%M%S+0000")
    code, text = hl7_priority(content.triage)
    placer, filler = _order_numbers(header)
    quantity_timing = f"^^^^^{code}"
    msh = [hl7_escape(sending_application), hl7_escape(sending_facility), hl7_escape(receiving_application)]
    msh += [hl7_escape(receiving_facility), moment, "", "ORU^R01^ORU_R01", control, processing_id, "2.5.1"]
    msh += ["", "", "", "", "", "UNICODE UTF-8"]
    segments = ["MSH|^~\\&|" + "|".join(msh)]
    segments.append(_segment("SFT", ["MedAI", hl7_escape(__version__), "MedAI", hl7_escape(__version__)]))
    patient_id = _components(header.patient_id, "", "", "", "MR")
    pid = ["1", "", patient_id, "", _xpn(header.patient_name), "", _hl7_date(header.birth_date), _sex(header.sex)]
    segments.append(_segment("PID", pid))
    segments.append(_segment("ORC", ["RE", placer, filler, "", "A", "", quantity_timing, "", moment]))
    obr = ["1", placer, filler, _components(*_SERVICE), code, "", header.study_datetime] + [""] * 14
    obr += [moment, "", "CT", "P", "", quantity_timing]
    segments.append(_segment("OBR", obr))
    disclaimer = f"{PRELIMINARY}: automatic measurements and categories by {content.model} {content.model_version}"
    segments.append(_segment("NTE", ["1", "L", hl7_escape(disclaimer + ", to be reviewed by a radiologist."), "RE"]))
    segments.append(_segment("TQ1", ["1"] + [""] * 7 + [_components(code, text, "HL70485")]))
    segments += _observations(content)
    message = "\r".join(segments)
    parsed = hl7.parse(message)  # our own check: the library reads back what was built
    if str(parsed.segment("MSH")(10)) != control or len(parsed) != len(segments):
        raise MedAIError("The ORU does not parse back into its own segments; this is a bug in MedAI, please report it.")
    return message
