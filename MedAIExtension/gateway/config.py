"""The gateway's configuration file (YAML): where studies come from, which pipeline runs on which, how to retry.

Example ``gateway.yaml``::

    pacs:
      type: orthanc                      # orthanc: its /changes feed; dicomweb: QIDO-RS polling; dimse: below
      url: http://127.0.0.1:8042         # Orthanc's REST root
      dicomweb_url: http://127.0.0.1:8042/dicom-web   # default: <url>/dicom-web
      username: medai
      password_env: MEDAI_PACS_PASSWORD  # or password_file (chmod 600); never the command line or plain text here
      timeout: 30                        # seconds to wait for the PACS to connect and to send each piece
    workdir: /var/lib/medai-gateway      # job journal (SQLite), outbox, scratch
    shadow: false                        # run and journal, but store nothing in the PACS
    workers: 1
    max_queued: 16
    max_attempts: 5
    retry_seconds: [5, 30, 120, 600]
    export:                              # optional: de-identified copies for research (PS3.15 Basic profile)
      path: /data/research-export
      key_file: /etc/medai/deid.key      # or MEDAI_DEID_KEY; the same key links later exports
      date_shift_days: -30               # optional: shift dates instead of removing them
    rules:
      - name: lung-screening
        match: {modality: CT, body_part: "CHEST|LUNG", series_description: ".*"}
        pipeline: nodule-tracking        # segmentation | nodule-tracking | explainability
        model: chest-ct-lung-nodule      # none: the classical nodule detector alone

Every key is checked when the file is read; a mistake gives one :class:`InputError` naming the key and the fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from MedAIExtension.errors import InputError, MedAIError
from MedAIExtension.explain.types import ExplainMethod
from MedAIExtension.models.catalog import load_catalog
from MedAIExtension.pacs.dimse import DimseSettings, check_ae_title

__all__ = [
    "ExportSettings",
    "GatewayConfig",
    "ListenSettings",
    "PacsSettings",
    "Pipeline",
    "RisSettings",
    "Rule",
    "load_config",
    "parse_config",
]


class Pipeline(StrEnum):
    """What the gateway runs on a matching study."""

    SEGMENTATION = "segmentation"
    NODULE_TRACKING = "nodule-tracking"
    EXPLAINABILITY = "explainability"


_DEFAULT_MODELS = {
    Pipeline.SEGMENTATION: "chest-ct-lung-nodule",
    Pipeline.NODULE_TRACKING: "chest-ct-lung-nodule",
    Pipeline.EXPLAINABILITY: "chest-ct-lung-nodule-torch",  # a whole series has no ROI for a patch classifier
}


@dataclass(frozen=True)
class Rule:
    """Which studies a pipeline runs on: every ``match`` pattern must match one series of the study.

    Attributes:
        name: the rule's name (journal, logs, worklist).
        pipeline: the pipeline to run.
        modality, body_part, series_description: case-insensitive regular expressions matched in full against
            the series' Modality, BodyPartExamined and SeriesDescription ("" matches anything).
        model: catalogue model name, or None (nodule tracking: the classical detector alone).
        explain_method: explainability only: ``gradcam``, ``occlusion``, ...
        sanity: explainability only: run the sanity checks (weight randomisation, deletion/insertion) with each
            map; they multiply the time per study.
        alert_labels: segmentation only: label names whose presence raises the study's priority.
        find_prior: nodule tracking: look up the patient's most recent earlier study and track against it.
    """

    name: str
    pipeline: Pipeline
    modality: str = ""
    body_part: str = ""
    series_description: str = ""
    model: str | None = None
    explain_method: str = "gradcam"
    sanity: bool = True
    alert_labels: tuple[str, ...] = ()
    find_prior: bool = True

    def matches(self, modality: str, body_part: str, description: str) -> bool:
        """Whether a series with these attributes is one this rule runs on."""
        for pattern, value in (
            (self.modality, modality),
            (self.body_part, body_part),
            (self.series_description, description),
        ):
            if pattern and not re.fullmatch(pattern, value or "", flags=re.IGNORECASE):
                return False
        return True


@dataclass(frozen=True)
class PacsSettings:
    """Where studies come from and results go back to."""

    type: str  # "orthanc", "dicomweb" or "dimse"
    url: str  # "" for dimse
    dicomweb_url: str  # "" for dimse
    section: Mapping[str, Any] = field(repr=False, default_factory=dict)  # credentials keys, passed to the stores
    poll_seconds: float = 2.0
    timeout: float = 30.0
    dimse: DimseSettings | None = None  # type dimse: host, port and AE titles


@dataclass(frozen=True)
class ExportSettings:
    """De-identified export of each finished study (its input series and the results) into a folder."""

    path: Path
    key_file: Path | None = None
    date_shift_days: int | None = None


@dataclass(frozen=True)
class ListenSettings:
    """MedAI as a DICOM node: a C-STORE SCP that receives studies (from a modality or a PACS routing rule)."""

    ae_title: str
    port: int
    address: str = "127.0.0.1"
    allowed_calling_aes: tuple[str, ...] = ()
    stable_seconds: float = 5.0


@dataclass(frozen=True)
class RisSettings:
    """Where each finished nodule-tracking study's report goes: an HL7 v2 ORU^R01 over MLLP, and optionally a FHIR
    R4 DiagnosticReport (JSON) into a folder."""

    host: str
    port: int
    timeout: float = 10.0
    sending_application: str = "MEDAI"
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    fhir_folder: Path | None = None


@dataclass(frozen=True)
class GatewayConfig:
    """The whole gateway configuration (see the module docstring)."""

    pacs: PacsSettings
    workdir: Path
    rules: tuple[Rule, ...]
    shadow: bool = False
    workers: int = 1
    max_queued: int = 16
    max_attempts: int = 5
    retry_seconds: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0)
    device: str = "auto"
    export: ExportSettings | None = None
    ris: RisSettings | None = None
    listen: ListenSettings | None = None
    source: str = ""  # the file it was read from, for messages

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` >= 1 failed attempts so far)."""
        return float(self.retry_seconds[min(attempt, len(self.retry_seconds)) - 1])

    def rule(self, name: str) -> Rule:
        """The rule called ``name``."""
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise InputError(f"No rule named {name!r} in {self.source or 'the gateway configuration'}.")


def _fail(where: str, problem: str) -> InputError:
    return InputError(f"Gateway configuration {where}: {problem}")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(where, f"must be a mapping of keys to values, got {type(value).__name__}.")
    return value


def _unknown(section: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(section) - allowed)
    if extra:
        raise _fail(where, f"unknown key(s) {', '.join(map(repr, extra))}; allowed: {', '.join(sorted(allowed))}.")


def _number(value: Any, where: str, minimum: float, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum:
        kind = "an integer" if integer else "a number"
        raise _fail(where, f"must be {kind} >= {minimum:g}, got {value!r}.")
    return value


def _pattern(value: Any, where: str) -> str:
    if value is None:
        return ""
    text = str(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise _fail(where, f"{text!r} is not a valid regular expression ({exc}).") from None
    return text


_CREDENTIAL_KEYS = {
    "username",
    "password",
    "password_env",
    "password_file",
    "token",
    "token_env",
    "token_file",
    "allow_plaintext_password",
}


def _ae_title(value: Any, where: str) -> str:
    """An AE title, or the configuration error naming ``where``."""
    if not isinstance(value, str) or not 0 < len(value.strip()) <= 16 or "\\" in value or not value.isascii():
        raise _fail(where, f"must be an AE title: 1 to 16 printable ASCII characters without backslash, got {value!r}.")
    return check_ae_title(value, where)


def _dimse(section: Mapping[str, Any]) -> PacsSettings:
    _unknown(section, {"type", "host", "port", "called_ae", "calling_ae", "poll_seconds", "timeout"}, "section 'pacs'")
    host = str(section.get("host") or "").strip()
    if not host:
        raise _fail("key 'pacs.host'", "needs the PACS's address (host name or IP) for type 'dimse'.")
    port = int(_number(section.get("port"), "key 'pacs.port'", 1, integer=True))
    if port > 65535:
        raise _fail("key 'pacs.port'", f"must be a TCP port (1-65535), got {port}.")
    called = _ae_title(section.get("called_ae"), "key 'pacs.called_ae' (the PACS's AE title)")
    calling = _ae_title(section.get("calling_ae", "MEDAI"), "key 'pacs.calling_ae' (MedAI's AE title)")
    poll = float(_number(section.get("poll_seconds", 2.0), "key 'pacs.poll_seconds'", 0.05))
    timeout = float(_number(section.get("timeout", 30.0), "key 'pacs.timeout'", 0.1))
    settings = DimseSettings(host, port, called, calling, timeout)
    return PacsSettings("dimse", "", "", {}, poll, timeout, settings)


def _pacs(value: Any) -> PacsSettings:
    section = _mapping(value, "key 'pacs'")
    kind = str(section.get("type", "orthanc")).lower()
    if kind == "dimse":
        return _dimse(section)
    _unknown(section, {"type", "url", "dicomweb_url", "poll_seconds", "timeout", *_CREDENTIAL_KEYS}, "section 'pacs'")
    if kind not in ("orthanc", "dicomweb"):
        raise _fail("key 'pacs.type'", f"{kind!r} is not supported; use 'orthanc', 'dicomweb' or 'dimse'.")
    url = str(section.get("url") or "").rstrip("/")
    if not re.match(r"^https?://", url):
        raise _fail("key 'pacs.url'", f"needs the server's http(s) address, got {url!r}.")
    default_web = f"{url}/dicom-web" if kind == "orthanc" else url
    web = str(section.get("dicomweb_url") or default_web).rstrip("/")
    poll = float(_number(section.get("poll_seconds", 2.0), "key 'pacs.poll_seconds'", 0.05))
    timeout = float(_number(section.get("timeout", 30.0), "key 'pacs.timeout'", 0.1))
    opt_in = section.get("allow_plaintext_password", False)
    if not isinstance(opt_in, bool):
        raise _fail("key 'pacs.allow_plaintext_password'", f"must be true or false, got {opt_in!r}.")
    credentials = {key: section[key] for key in _CREDENTIAL_KEYS if key in section}
    return PacsSettings(kind, url, web, credentials, poll, timeout)


_RULE_KEYS = {"name", "match", "pipeline", "model", "method", "sanity", "alert_labels", "find_prior"}


def _refuse_patch_classifier(model: str, where: str) -> None:
    """A patch classifier explains the one patch an ROI names; the gateway explains whole series and has none."""
    try:
        entry = load_catalog().get(model)
    except MedAIError:
        return  # an unknown model fails with its own clear error when a study is processed
    if entry.is_classifier:
        raise _fail(
            where,
            f"{model} classifies one patch around an ROI, and the gateway explains whole series without one. "
            f"Use a segmentation model ({_DEFAULT_MODELS[Pipeline.EXPLAINABILITY]} explains the lung-lesion "
            "label over the series).",
        )


def _rule(value: Any, index: int) -> Rule:
    where = f"rule {index + 1}"
    section = _mapping(value, where)
    _unknown(section, _RULE_KEYS, where)
    name = str(section.get("name") or f"rule-{index + 1}")
    try:
        pipeline = Pipeline(str(section.get("pipeline", "")))
    except ValueError:
        options = ", ".join(p.value for p in Pipeline)
        raise _fail(
            f"{where} ({name}) key 'pipeline'", f"{section.get('pipeline')!r} is not one of {options}."
        ) from None
    match = _mapping(section.get("match") or {}, f"{where} ({name}) key 'match'")
    _unknown(match, {"modality", "body_part", "series_description"}, f"{where} ({name}) key 'match'")
    model = section.get("model", _DEFAULT_MODELS[pipeline])
    model = None if model in (None, "none", "") else str(model)
    if model is None and pipeline is not Pipeline.NODULE_TRACKING:
        raise _fail(f"{where} ({name}) key 'model'", f"the {pipeline.value} pipeline needs a model name.")
    method = str(section.get("method", "gradcam")).lower()
    if method not in {m.value for m in ExplainMethod}:
        options = ", ".join(m.value for m in ExplainMethod)
        raise _fail(f"{where} ({name}) key 'method'", f"{method!r} is not one of {options}.")
    if pipeline is Pipeline.EXPLAINABILITY and model is not None:
        _refuse_patch_classifier(model, f"{where} ({name}) key 'model'")
    labels = section.get("alert_labels") or []
    if isinstance(labels, str) or not isinstance(labels, list):
        raise _fail(f"{where} ({name}) key 'alert_labels'", "must be a list of label names, e.g. [nodule].")
    return Rule(
        name=name,
        pipeline=pipeline,
        modality=_pattern(match.get("modality"), f"{where} ({name}) match.modality"),
        body_part=_pattern(match.get("body_part"), f"{where} ({name}) match.body_part"),
        series_description=_pattern(match.get("series_description"), f"{where} ({name}) match.series_description"),
        model=model,
        explain_method=method,
        sanity=bool(section.get("sanity", True)),
        alert_labels=tuple(str(label) for label in labels),
        find_prior=bool(section.get("find_prior", True)),
    )


_TOP_KEYS = {
    "pacs",
    "workdir",
    "rules",
    "shadow",
    "workers",
    "max_queued",
    "max_attempts",
    "retry_seconds",
    "device",
    "export",
    "ris",
    "listen",
}


def _path(value: Any, base: Path | None) -> Path:
    path = Path(os.path.expanduser(str(value)))
    return path if path.is_absolute() else (base or Path.cwd()) / path


def _export(value: Any, base: Path | None) -> ExportSettings | None:
    if value is None:
        return None
    section = _mapping(value, "key 'export'")
    _unknown(section, {"path", "key_file", "date_shift_days"}, "section 'export'")
    if not section.get("path"):
        raise _fail("key 'export.path'", "needs the folder the de-identified copies go to.")
    shift = section.get("date_shift_days")
    if shift is not None and (isinstance(shift, bool) or not isinstance(shift, int) or shift == 0):
        raise _fail("key 'export.date_shift_days'", f"must be a non-zero whole number of days, got {shift!r}.")
    key_file = _path(section["key_file"], base) if section.get("key_file") else None
    return ExportSettings(_path(section["path"], base), key_file, shift)


def _listen(value: Any) -> ListenSettings | None:
    if value is None:
        return None
    section = _mapping(value, "key 'listen'")
    _unknown(section, {"ae_title", "port", "address", "allowed_calling_aes", "stable_seconds"}, "section 'listen'")
    title = _ae_title(section.get("ae_title", "MEDAI"), "key 'listen.ae_title'")
    port = int(_number(section.get("port"), "key 'listen.port'", 1, integer=True))
    if port > 65535:
        raise _fail("key 'listen.port'", f"must be a TCP port (1-65535), got {port}.")
    allowed = section.get("allowed_calling_aes")
    if not isinstance(allowed, list) or not allowed:
        raise _fail(
            "key 'listen.allowed_calling_aes'",
            "needs the AE titles allowed to send studies (e.g. [CT01, PACS]); associations from others are refused.",
        )
    titles = tuple(_ae_title(item, "key 'listen.allowed_calling_aes'") for item in allowed)
    address = str(section.get("address", "127.0.0.1")).strip()
    stable = float(_number(section.get("stable_seconds", 5.0), "key 'listen.stable_seconds'", 0.1))
    return ListenSettings(title, port, address, titles, stable)


def _ris(value: Any, base: Path | None) -> RisSettings | None:
    if value is None:
        return None
    section = _mapping(value, "key 'ris'")
    names = ("sending_application", "sending_facility", "receiving_application", "receiving_facility")
    _unknown(section, {"host", "port", "timeout", "fhir_folder", *names}, "section 'ris'")
    host = str(section.get("host") or "").strip()
    if not host:
        raise _fail("key 'ris.host'", "needs the address of the RIS's HL7 (MLLP) listener.")
    port = int(_number(section.get("port"), "key 'ris.port'", 1, integer=True))
    if port > 65535:
        raise _fail("key 'ris.port'", f"must be a TCP port (1-65535), got {port}.")
    texts = {}
    for name in names:
        text = str(section.get(name, "MEDAI" if name == "sending_application" else "") or "")
        if any(c in text for c in "|^~\\&\r\n") or len(text) > 64:
            raise _fail(
                f"key 'ris.{name}'", f"must be plain text of at most 64 characters without | ^ ~ \\ &, got {text!r}."
            )
        texts[name] = text
    fhir = _path(section["fhir_folder"], base) if section.get("fhir_folder") else None
    timeout = float(_number(section.get("timeout", 10.0), "key 'ris.timeout'", 0.1))
    return RisSettings(host, port, timeout, fhir_folder=fhir, **texts)


def parse_config(data: Any, source: str = "", base: Path | None = None) -> GatewayConfig:
    """Validate a parsed configuration mapping into a :class:`GatewayConfig`.

    Args:
        data: the mapping (as read from YAML).
        source: where it came from, for messages.
        base: folder relative ``workdir`` paths are resolved against (the config file's folder).

    Raises:
        InputError: a missing or wrong key, naming it and the fix.
    """
    section = _mapping(data, "file")
    _unknown(section, _TOP_KEYS, "top level")
    if "pacs" not in section:
        raise _fail("top level", "needs a 'pacs' section (type, url and credentials of the server).")
    if "workdir" not in section:
        raise _fail("top level", "needs 'workdir', a folder for the job journal, outbox and scratch files.")
    workdir = _path(section["workdir"], base)
    rules_data = section.get("rules")
    if not isinstance(rules_data, list) or not rules_data:
        raise _fail("key 'rules'", "needs a list of at least one rule (match, pipeline, model).")
    rules = tuple(_rule(item, index) for index, item in enumerate(rules_data))
    names = [rule.name for rule in rules]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise _fail("key 'rules'", f"rule names must be unique; {', '.join(duplicated)} appear more than once.")
    retry = section.get("retry_seconds", [5, 30, 120, 600])
    if not isinstance(retry, list) or not retry:
        raise _fail("key 'retry_seconds'", "must be a list of seconds, e.g. [5, 30, 120].")
    device = str(section.get("device", "auto"))
    if device not in ("auto", "cpu", "cuda"):
        raise _fail("key 'device'", f"{device!r} is not one of auto, cpu, cuda.")
    return GatewayConfig(
        pacs=_pacs(section["pacs"]),
        workdir=workdir,
        rules=rules,
        shadow=bool(section.get("shadow", False)),
        workers=int(_number(section.get("workers", 1), "key 'workers'", 1, integer=True)),
        max_queued=int(_number(section.get("max_queued", 16), "key 'max_queued'", 1, integer=True)),
        max_attempts=int(_number(section.get("max_attempts", 5), "key 'max_attempts'", 1, integer=True)),
        retry_seconds=tuple(float(_number(v, "key 'retry_seconds'", 0)) for v in retry),
        device=device,
        export=_export(section.get("export"), base),
        ris=_ris(section.get("ris"), base),
        listen=_listen(section.get("listen")),
        source=source,
    )


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate a gateway YAML file.

    Raises:
        InputError: the file is missing, not YAML, or a key is wrong.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(f"Gateway configuration {path} does not exist. Pass --config with the path of gateway.yaml.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(
            f"Gateway configuration {path} is not valid YAML ({exc}). Fix the file and start again."
        ) from None
    return parse_config(data, str(path), path.parent)
