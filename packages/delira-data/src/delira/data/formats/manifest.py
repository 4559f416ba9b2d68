"""Manifest datasets: a CSV or JSON table with one row per case (image paths, label, ...).

CSV: a header row, then one row per case::

    case_id,image,label,patient
    c1,images/c1.nii.gz,benign,p01

JSON: a list of objects with the same fields, or ``{"cases": [...]}``. Relative paths are relative
to the manifest's folder (or ``root``).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from delira.data.datasets import LazyDataset
from delira.data.formats.cases import CaseReader, Reader, raise_missing

__all__ = ["ManifestDataset"]


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix.lower() == ".json":
        doc = json.loads(path.read_text())
        rows = doc.get("cases") if isinstance(doc, dict) else doc
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError(
                f"{path} must hold a JSON list of objects (one per case) or {{'cases': [...]}}; got "
                f"{type(rows).__name__}"
            )
        return rows
    with path.open(newline="") as f:
        return [dict(row) for row in csv.DictReader(f)]


class ManifestDataset(LazyDataset):
    """Cases listed in a CSV or JSON manifest, read on access.

    Args:
        path: the manifest (``.csv``, or ``.json``).
        image_column: the column with the image path, or several columns (one channel each).
        label_column: the column with the class label (``int`` values, or names mapped to
            ``0 .. K - 1`` in sorted order, or by ``classes``); None for no label.
        seg_column: optional column with a segmentation path.
        case_id_column: column with the case id (default: the row number as a string).
        group_column: optional column with a group id (the patient), exposed as ``groups`` for
            :func:`~delira.data.splits.group_kfold_split`.
        root: folder that relative paths start from (default: the manifest's folder).
        classes: class names in label order (default: sorted unique names, when labels are not ints).
        reader: ``reader(path) -> image`` (default :func:`delira.io.read_image`).
        orientation: None reads the files as stored; an orientation code (``"RAS"``, ``"LPS"``, ...)
            reads every file reoriented to it (see :class:`~delira.data.formats.DecathlonDataset`).

    Samples: ``{"data": float32 (C, *spatial), "label": int, "seg": int16 (1, *spatial) (with
    seg_column), "case_id": str, "spacing", "origin", "direction", "group": str (with group_column)}``.

    Raises:
        FileNotFoundError: the manifest or files it lists are missing (all missing paths listed).
        ValueError: the manifest is empty or lacks a column.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        image_column: str | Sequence[str] = "image",
        label_column: str | None = "label",
        seg_column: str | None = None,
        case_id_column: str | None = None,
        group_column: str | None = None,
        root: str | os.PathLike[str] | None = None,
        classes: Sequence[str] | None = None,
        reader: Reader | None = None,
        orientation: str | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"manifest {self.path} does not exist; pass the path of a .csv or .json file"
            )
        rows = _read_rows(self.path)
        if not rows:
            raise ValueError(f"manifest {self.path} lists no case; an empty dataset cannot be loaded")
        self.root = Path(root) if root is not None else self.path.parent
        image_columns = [image_column] if isinstance(image_column, str) else list(image_column)
        wanted = [*image_columns, label_column, seg_column, case_id_column, group_column]
        for column in (c for c in wanted if c is not None):
            absent = [i for i, row in enumerate(rows) if row.get(column) in (None, "")]
            if absent:
                raise ValueError(
                    f"manifest {self.path}: column {column!r} is missing or empty in row(s) {absent[:10]} "
                    f"(columns present: {sorted(rows[absent[0]])}); fill it or pass the right column name"
                )
        self.classes: list[str] | None = None
        labels: list[int | None] = [None] * len(rows)
        if label_column is not None:
            raw = [str(row[label_column]).strip() for row in rows]
            if classes is None and all(v.lstrip("-").isdigit() for v in raw):
                labels = [int(v) for v in raw]
            else:
                self.classes = list(classes) if classes is not None else sorted(set(raw))
                index = {name: i for i, name in enumerate(self.classes)}
                unknown = sorted(set(raw) - set(index))
                if unknown:
                    raise ValueError(
                        f"manifest {self.path}: labels {unknown} are not in classes {self.classes}"
                    )
                labels = [index[v] for v in raw]
        records = []
        for i, row in enumerate(rows):
            record: dict[str, Any] = {
                "case_id": str(row[case_id_column]) if case_id_column else str(i),
                "images": [str(self.root / str(row[c])) for c in image_columns],
                "seg": str(self.root / str(row[seg_column])) if seg_column else None,
                "label": labels[i],
            }
            if group_column:
                record["group"] = str(row[group_column])
            records.append(record)
        paths = [p for r in records for p in (*r["images"], r["seg"]) if p is not None]
        raise_missing([p for p in paths if not os.path.exists(p)], f"manifest {self.path}")
        self.labels = labels
        self.groups = [r.get("group") for r in records] if group_column else None
        load = CaseReader(reader, orientation)
        self.orientation: str | None = load.orientation
        super().__init__(records, load, [r["case_id"] for r in records])

    def __repr__(self) -> str:
        oriented = f", orientation={self.orientation!r}" if self.orientation else ""
        return f"ManifestDataset({str(self.path)!r}, {len(self)} cases{oriented})"
