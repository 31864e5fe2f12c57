"""The review project store: one SQLite file per review project.

* :mod:`.project` — :class:`ReviewStore` itself (create/open, images, grades, metrics, settings);
* :mod:`.reader` — blinded reader sessions and their trials (a mixin of :class:`ReviewStore`);
* :mod:`.base` — connection plumbing: WAL, busy timeout, transactions, typed SQLite errors;
* :mod:`.records` — the read-only records the store hands out;
* :mod:`.checks` — validation and hashing helpers (pure functions);
* :mod:`.manifest` — reading CSV/JSON image manifests;
* :mod:`.decisions` — :class:`~.decisions.DecisionStore`, a reader's accept / reject / comment decisions on an AI
  result (``medai view``; ``medai worklist`` shows them for gateway studies).
"""

from MedAIExtension.review.schema import SCHEMA_VERSION
from MedAIExtension.review.store.base import DEFAULT_BUSY_TIMEOUT, ProjectLockedError
from MedAIExtension.review.store.checks import image_sha256
from MedAIExtension.review.store.project import DEFAULT_ARTIFACTS, ReviewStore
from MedAIExtension.review.store.records import (
    GradeRecord,
    ImageRecord,
    ImageRole,
    ImportFailure,
    ImportReport,
    ReaderSession,
    Trial,
)

__all__ = [
    "DEFAULT_ARTIFACTS",
    "DEFAULT_BUSY_TIMEOUT",
    "SCHEMA_VERSION",
    "GradeRecord",
    "ImageRecord",
    "ImageRole",
    "ImportFailure",
    "ImportReport",
    "ProjectLockedError",
    "ReaderSession",
    "ReviewStore",
    "Trial",
    "image_sha256",
]
