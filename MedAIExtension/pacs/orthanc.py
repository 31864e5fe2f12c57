"""A small client of Orthanc's own REST API: changes feed, lookup, study tags and user-defined metadata.

Orthanc 1.10 (Debian) has no labels; the MedAI gateway keeps its per-study state in *user-defined metadata*,
which Orthanc only accepts when declared in its configuration, e.g.::

    "UserMetadata": {"MedAIPriority": 1024, "MedAIPriorityReason": 1025, "MedAIStatus": 1026}

``GET /studies/{id}/metadata?expand`` answers a JSON object of every metadata item of the study by name: the
system ones Orthanc sets itself (``LastUpdate``) and the user-defined ones that have been set (unset ones are
absent). Without ``?expand`` it lists the names only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from MedAIExtension.pacs.credentials import Credentials, check_url, make_session
from MedAIExtension.pacs.errors import (
    PacsError,
    PacsNotFoundError,
    error_for_exception,
    error_for_status,
)

__all__ = ["Change", "OrthancClient"]

#: Orthanc's internal error codes (``OrthancStatus`` of an error answer) that matter here.
_INEXISTENT_ITEM = 7
_UNKNOWN_RESOURCE = 17


@dataclass(frozen=True)
class Change:
    """One entry of Orthanc's ``/changes`` feed.

    Attributes:
        seq: sequence number (increasing).
        change_type: e.g. ``"NewInstance"``, ``"StableStudy"``, ``"NewStudy"``.
        resource_type: ``"Patient"``, ``"Study"``, ``"Series"`` or ``"Instance"``.
        resource_id: Orthanc identifier of the resource.
        date: when it happened, ``YYYYMMDDTHHMMSS``.
    """

    seq: int
    change_type: str
    resource_type: str
    resource_id: str
    date: str


class OrthancClient:
    """Orthanc REST API client.

    Args:
        url: Orthanc's REST root, e.g. ``http://127.0.0.1:8042``.
        credentials: basic auth or bearer token (none when ``None``).
        timeout: seconds to wait for each request.
    """

    def __init__(self, url: str, credentials: Credentials | None = None, timeout: float = 30.0) -> None:
        self.url = check_url(url)
        self.credentials = credentials
        self.timeout = float(timeout)
        self._session = make_session(credentials)

    def __repr__(self) -> str:
        return f"OrthancClient({self.url!r}, auth={self.credentials.kind if self.credentials else 'none'})"

    def close(self) -> None:
        """Close the HTTP connections."""
        self._session.close()

    # ---- HTTP -------------------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, action: str, *, allow_404: bool = False, **kwargs: Any) -> Any:
        """Send a request; return the ``requests.Response``, mapping failures to :class:`PacsError`.

        With ``allow_404`` a 404 answer is returned instead of raised.
        """
        import requests

        try:
            response = self._session.request(method, f"{self.url}{path}", timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise error_for_exception(exc, self.url, action) from None
        if response.status_code == 404 and allow_404:
            return response
        if response.status_code == 404:
            message = _orthanc_error(response).get("Message") or "unknown resource"
            raise PacsNotFoundError(
                f"Orthanc at {self.url} has no {path} ({message}) when trying to {action}. It may have been deleted, "
                "or `url` is not Orthanc's REST root (e.g. http://host:8042, not …/dicom-web)."
            )
        if response.status_code >= 400:
            raise error_for_status(
                response.status_code,
                self.url,
                action,
                self.credentials,
                str(_orthanc_error(response).get("Message", "")),
            )
        return response

    def _json(self, path: str, action: str, **params: Any) -> Any:
        response = self._request("GET", path, action, params=params or None)
        try:
            return response.json()
        except ValueError:
            raise PacsError(
                f"Orthanc at {self.url} did not answer JSON to {path}. Check that `url` is Orthanc's REST root "
                "(e.g. http://host:8042, not …/dicom-web)."
            ) from None

    # ---- API --------------------------------------------------------------------------------------------------
    def system(self) -> dict[str, Any]:
        """``/system``: version, name, API version. Use it to check address and credentials.

        Raises:
            PacsAuthError: wrong or missing credentials.
            PacsUnavailableError: Orthanc cannot be reached.
        """
        return dict(self._json("/system", "read /system"))

    def changes(self, since: int = 0, limit: int = 100) -> tuple[list[Change], int, bool]:
        """The changes after sequence number ``since``.

        Returns:
            The changes (at most ``limit``), the last sequence number seen, and whether the feed is exhausted
            (``done``; otherwise call again with ``since`` = the returned number).
        """
        body = self._json("/changes", "read the changes", since=int(since), limit=int(limit))
        changes = [
            Change(
                seq=int(item["Seq"]),
                change_type=str(item.get("ChangeType", "")),
                resource_type=str(item.get("ResourceType", "")),
                resource_id=str(item.get("ID", "")),
                date=str(item.get("Date", "")),
            )
            for item in body.get("Changes", [])
        ]
        return changes, int(body.get("Last", since)), bool(body.get("Done", True))

    def last_change(self) -> int:
        """The sequence number of the newest change (0 on an empty Orthanc)."""
        return int(self._json("/changes", "read the last change", last="").get("Last", 0))

    def studies(self) -> list[str]:
        """Orthanc identifiers of all studies."""
        return [str(s) for s in self._json("/studies", "list the studies")]

    def study(self, orthanc_id: str) -> dict[str, Any]:
        """``/studies/{id}`` as Orthanc answers it (MainDicomTags, PatientMainDicomTags, Series, IsStable …)."""
        return dict(self._json(f"/studies/{orthanc_id}", f"read study {orthanc_id}"))

    def study_id(self, study_uid: str) -> str | None:
        """The Orthanc identifier of the study with this StudyInstanceUID, or ``None``."""
        response = self._request("POST", "/tools/lookup", f"look up study {study_uid}", data=study_uid)
        for item in response.json():
            if item.get("Type") == "Study":
                return str(item["ID"])
        return None

    def find_studies(self, patient_id: str) -> list[dict[str, Any]]:
        """``/tools/find`` at study level by PatientID, expanded (``MainDicomTags``, ``PatientMainDicomTags``).

        The value travels in a JSON body, so it reaches Orthanc whatever characters it holds (QIDO-RS query values
        are percent-encoded, which Orthanc's DICOMweb plugin does not decode). ``*`` and ``?`` are wildcards to
        Orthanc, so callers compare the answers' PatientID exactly.
        """
        response = self._request(
            "POST",
            "/tools/find",
            "find the studies of a patient",
            json={"Level": "Study", "Query": {"PatientID": patient_id}, "Expand": True},
        )
        try:
            body = response.json()
        except ValueError:
            raise PacsError(f"Orthanc at {self.url} did not answer JSON to /tools/find.") from None
        return [item for item in body if isinstance(item, dict)] if isinstance(body, list) else []

    def study_uid(self, orthanc_id: str) -> str:
        """The StudyInstanceUID of an Orthanc study."""
        return str(self.study(orthanc_id).get("MainDicomTags", {}).get("StudyInstanceUID", ""))

    def study_tags(self, orthanc_id: str) -> dict[str, str]:
        """The study's main DICOM tags merged with its patient's (PatientID, PatientName, StudyDate …)."""
        study = self.study(orthanc_id)
        tags = dict(study.get("PatientMainDicomTags", {}))
        tags.update(study.get("MainDicomTags", {}))
        return {str(k): str(v) for k, v in tags.items()}

    def series_of_study(self, orthanc_id: str) -> list[dict[str, Any]]:
        """The study's series: ``ID`` (Orthanc), ``SeriesInstanceUID``, ``Modality``, ``BodyPartExamined``,
        ``SeriesDescription``, ``NumberOfInstances`` and ``IsStable``."""
        result = []
        for series in self._json(f"/studies/{orthanc_id}/series", f"list the series of study {orthanc_id}"):
            tags = series.get("MainDicomTags", {})
            result.append(
                {
                    "ID": str(series.get("ID", "")),
                    "SeriesInstanceUID": str(tags.get("SeriesInstanceUID", "")),
                    "Modality": str(tags.get("Modality", "")),
                    "BodyPartExamined": str(tags.get("BodyPartExamined", "")),
                    "SeriesDescription": str(tags.get("SeriesDescription", "")),
                    "NumberOfInstances": len(series.get("Instances", [])),
                    "IsStable": bool(series.get("IsStable", False)),
                }
            )
        return result

    def set_metadata(self, orthanc_study_id: str, name: str, value: str) -> None:
        """Set a user-defined metadata item of a study.

        Raises:
            PacsNotFoundError: no such study.
            PacsError: ``name`` is not declared in Orthanc's ``UserMetadata`` configuration.
        """
        self._metadata_request("PUT", orthanc_study_id, name, data=str(value).encode("utf-8"))

    def get_metadata(self, orthanc_study_id: str, name: str) -> str | None:
        """A metadata item of a study, or ``None`` when it is not set.

        Raises:
            PacsNotFoundError: no such study.
        """
        response = self._metadata_request("GET", orthanc_study_id, name, missing_ok=True)
        return None if response is None else response.content.decode("utf-8")

    def study_metadata(self, orthanc_study_id: str) -> dict[str, str]:
        """Every metadata item set on a study (``/metadata?expand``): system ones such as ``LastUpdate`` and the
        user-defined ones that are set."""
        body = self._json(
            f"/studies/{orthanc_study_id}/metadata", f"read the metadata of study {orthanc_study_id}", expand=""
        )
        return {str(k): str(v) for k, v in body.items()}

    def _metadata_request(
        self, method: str, orthanc_study_id: str, name: str, *, missing_ok: bool = False, **kwargs: Any
    ) -> Any:
        """A metadata request; ``None`` when the item is unset and ``missing_ok``."""
        path = f"/studies/{orthanc_study_id}/metadata/{name}"
        action = f"{'set' if method == 'PUT' else 'read'} metadata {name!r} of study {orthanc_study_id}"
        response = self._request(method, path, action, allow_404=True, **kwargs)
        if response.status_code != 404:
            return response
        status = _orthanc_error(response).get("OrthancStatus")
        if status == _UNKNOWN_RESOURCE:
            raise PacsNotFoundError(
                f"Orthanc at {self.url} has no study {orthanc_study_id} (trying to {action}). It may have been "
                "deleted; look it up again with study_id()."
            )
        if status == _INEXISTENT_ITEM:
            raise PacsError(
                f"Orthanc at {self.url} does not know the metadata {name!r}. Declare it in Orthanc's configuration "
                f'("UserMetadata": {{"{name}": <a number from 1024 to 65535>}}) and restart Orthanc.'
            )
        if missing_ok:
            return None  # a declared metadata item that is not set: Orthanc answers 404 with an empty body
        raise PacsNotFoundError(f"Orthanc at {self.url} answered 'not found' when trying to {action}.")


def _orthanc_error(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
