"""The PS3.15 Basic Application Level Confidentiality Profile table (Table E.1-1) and how each action resolves.

The table is not retyped here: it is the one shipped with dicom-anonymizer
(``dicomanonymizer.dicomfields_selector.dicom_anonymization_database_selector("dicomfields_2026c")``), whose
categories are ``D_TAGS``, ``Z_TAGS``, ``X_TAGS``, ``U_TAGS``, ``Z_D_TAGS``, ``X_Z_TAGS``, ``X_D_TAGS``,
``X_Z_D_TAGS`` and ``X_Z_U_STAR_TAGS`` (``ALL_TAGS`` is their union). Tags are ``(group, element)`` or, for the
repeating groups (curves 50xx, overlays 60xx), ``(group, element, group mask, element mask)``.

The combined actions pick the strictest action that keeps the object valid for its IOD, from the attribute's
type in the IOD (the module tables of PS3.3 shipped with highdicom, looked up at the attribute's nesting
path): X/Z → X (Type 3 or absent from the IOD), Z (Type 2/2C), D (Type 1/1C); X/D → X, or D when Type 1/2;
X/Z/D → X, Z or D in the same way; Z/D → Z, or D when Type 1/1C. X/Z/U* (Referenced Image Sequence, Source
Image Sequence) keeps the sequence with every UID in it remapped (U*), so that derived objects (SEG frames,
SC images) still reference their source images.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = [
    "TABLE_VERSION",
    "Action",
    "ProfileTable",
    "attribute_type",
    "describe",
    "load_profile",
    "resolve_action",
]

#: The dicom-anonymizer database holding Table E.1-1.
TABLE_VERSION = "dicomfields_2026c"


class Action(enum.StrEnum):
    """An action of Table E.1-1 (plus K, keep, for attributes outside the table)."""

    D = "D"
    Z = "Z"
    X = "X"
    U = "U"
    K = "K"
    Z_D = "Z/D"
    X_Z = "X/Z"
    X_D = "X/D"
    X_Z_D = "X/Z/D"
    X_Z_U = "X/Z/U*"
    #: Keep the attribute (a sequence) and remap every UID inside it: the resolved form of X/Z/U*.
    U_STAR = "U*"


_CATEGORY_ACTIONS: dict[str, Action] = {
    "D_TAGS": Action.D,
    "Z_TAGS": Action.Z,
    "X_TAGS": Action.X,
    "U_TAGS": Action.U,
    "Z_D_TAGS": Action.Z_D,
    "X_Z_TAGS": Action.X_Z,
    "X_D_TAGS": Action.X_D,
    "X_Z_D_TAGS": Action.X_Z_D,
    "X_Z_U_STAR_TAGS": Action.X_Z_U,
}


@dataclass(frozen=True)
class ProfileTable:
    """Table E.1-1 as a lookup from tag to action.

    Attributes:
        exact: action of each fully specified tag (``0xGGGGEEEE``).
        masked: ``(group, element, group mask, element mask, action)`` rows for repeating groups.
        version: the dicom-anonymizer database the table came from.
    """

    exact: dict[int, Action]
    masked: tuple[tuple[int, int, int, int, Action], ...]
    version: str

    def action(self, tag: int) -> Action | None:
        """The table's action for ``tag``, or ``None`` when the table does not list it."""
        tag = int(tag)
        found = self.exact.get(tag)
        if found is not None:
            return found
        group, element = tag >> 16, tag & 0xFFFF
        for g, e, gmask, emask, action in self.masked:
            if group & gmask == g & gmask and element & emask == e & emask:
                return action
        return None

    def rows(self) -> list[tuple[int, Action]]:
        """Every fully specified ``(tag, action)`` row (for tests and reports)."""
        return sorted(self.exact.items())


@lru_cache(maxsize=4)
def load_profile(version: str = TABLE_VERSION) -> ProfileTable:
    """Load Table E.1-1 from dicom-anonymizer's database ``version``.

    Raises:
        RuntimeError: the database lacks one of the expected categories or lists a tag twice (a broken or
            incompatible dicom-anonymizer installation).
    """
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    database = dicom_anonymization_database_selector(version)
    exact: dict[int, Action] = {}
    masked: list[tuple[int, int, int, int, Action]] = []
    for category, action in _CATEGORY_ACTIONS.items():
        if category not in database:
            raise RuntimeError(f"dicom-anonymizer database {version} has no {category}; reinstall dicom-anonymizer.")
        for row in database[category]:
            if len(row) == 2:
                tag = (int(row[0]) << 16) | int(row[1])
                if tag in exact and exact[tag] != action:
                    raise RuntimeError(f"Tag {tag:08X} has two actions in dicom-anonymizer database {version}.")
                exact[tag] = action
            elif len(row) == 4:
                masked.append((int(row[0]), int(row[1]), int(row[2]), int(row[3]), action))
            else:
                raise RuntimeError(f"Unexpected row {row!r} in dicom-anonymizer database {version}.")
    return ProfileTable(exact, tuple(masked), version)


_TYPE_RANK = {"1": 0, "1C": 0, "2": 1, "2C": 1, "3": 2}
_RANK_TYPE = {0: "1", 1: "2", 2: "3"}


@lru_cache(maxsize=64)
def _iod_attribute_types(sop_class_uid: str) -> dict[tuple[tuple[str, ...], str], str] | None:
    """``{(path, keyword): type}`` over all modules of the IOD of ``sop_class_uid`` (strictest type wins)."""
    try:
        from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map
    except ImportError:  # pragma: no cover - highdicom moved its private tables
        return None
    iod = get_sop_class_iod_map().get(sop_class_uid)
    if iod is None:
        return None
    attribute_map = get_module_attribute_map()
    types: dict[tuple[tuple[str, ...], str], int] = {}
    for module in get_iod_module_map().get(iod, []):
        for entry in attribute_map.get(module["key"], []):
            rank = _TYPE_RANK.get(str(entry["type"]))
            if rank is None:
                continue
            key = (_normalise_path(entry["path"]), str(entry["keyword"]))
            types[key] = min(types.get(key, rank), rank)
    return {key: _RANK_TYPE[rank] for key, rank in types.items()}


def _normalise_path(path: Sequence[str]) -> tuple[str, ...]:
    """Collapse the recursive SR content tree (ContentSequence inside ContentSequence) to one level."""
    out: list[str] = []
    for keyword in path:
        if keyword == "ContentSequence" and out and out[-1] == "ContentSequence":
            continue
        out.append(keyword)
    return tuple(out)


def attribute_type(sop_class_uid: str, path: Sequence[str], keyword: str) -> str | None:
    """The type (``"1"``, ``"2"`` or ``"3"``; 1C counts as 1, 2C as 2) of ``keyword`` at ``path`` in the IOD.

    Args:
        sop_class_uid: SOP Class UID of the object.
        path: keywords of the sequences enclosing the attribute, outermost first (empty at the top level).
        keyword: the attribute's keyword.

    Returns:
        The strictest type over the IOD's modules, or ``None`` when the IOD or the attribute is unknown.
    """
    types = _iod_attribute_types(str(sop_class_uid))
    if types is None:
        return None
    return types.get((_normalise_path(path), keyword))


def resolve_action(action: Action, attr_type: str | None) -> Action:
    """The single action (D, Z, X, U, K or U*) to apply for a table action and the attribute's IOD type.

    Unknown types (``None``: the attribute is not part of the IOD at that place) resolve to the strictest
    choice, X where it is allowed.
    """
    if action in (Action.D, Action.Z, Action.X, Action.U, Action.K, Action.U_STAR):
        return action
    if action is Action.X_Z_U:
        return Action.U_STAR
    required = attr_type == "1"
    type2 = attr_type == "2"
    if action is Action.Z_D:
        return Action.D if required else Action.Z
    if action is Action.X_Z:
        return Action.D if required else Action.Z if type2 else Action.X
    if action is Action.X_D:
        return Action.D if required or type2 else Action.X
    if action is Action.X_Z_D:
        return Action.D if required else Action.Z if type2 else Action.X
    raise ValueError(f"unknown action {action!r}")  # pragma: no cover


def describe(table: ProfileTable) -> dict[str, Any]:
    """Counts of rows per action (for the report and the tests)."""
    counts: dict[str, int] = {}
    for action in table.exact.values():
        counts[action.value] = counts.get(action.value, 0) + 1
    return {"version": table.version, "rows": len(table.exact), "masked": len(table.masked), "actions": counts}
