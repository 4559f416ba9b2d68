"""The Medical Segmentation Decathlon / nnU-Net raw dataset layout.

::

    Task02_Heart/ (or Dataset002_Heart/)
      dataset.json
      imagesTr/  la_003.nii.gz            one multi-channel file per case (MSD), or
                 la_003_0000.nii.gz       one file per channel, suffix _XXXX (nnU-Net)
      labelsTr/  la_003.nii.gz
      imagesTs/  ...

``dataset.json`` may be the MSD one (``"modality"``, ``"labels": {"0": "background", ...}``,
``"training": [{"image": "./imagesTr/la_003.nii.gz", "label": "./labelsTr/la_003.nii.gz"}]``,
``"test": ["./imagesTs/la_001.nii.gz"]``) or nnU-Net v2's (``"channel_names"``,
``"labels": {"background": 0, ...}``, ``"file_ending"``, cases found in the folders). A listed image
that does not exist as such is looked up as its channel files ``<case>_0000<ending>``, ... (what
nnU-Net v1's conversion of MSD tasks produces).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from delira.data.datasets import LazyDataset
from delira.data.formats.cases import CaseReader, Reader, raise_missing

__all__ = ["DecathlonDataset"]

_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".tif", ".tiff")


def _split_ending(name: str, file_ending: str | None) -> tuple[str, str]:
    if file_ending and name.endswith(file_ending):
        return name[: -len(file_ending)], file_ending
    for ending in _ENDINGS:
        if name.endswith(ending):
            return name[: -len(ending)], ending
    stem, ending = os.path.splitext(name)
    return stem, ending


def _relative(root: Path, listed: str) -> Path:
    return root / listed[2:] if listed.startswith("./") else root / listed


class DecathlonDataset(LazyDataset):
    """Cases of an MSD / nnU-Net raw dataset folder, read on access.

    Args:
        root: the folder holding ``dataset.json``.
        split: ``"training"`` (images and segmentations, ``imagesTr``/``labelsTr``) or ``"test"``
            (images only, ``imagesTs``).
        reader: ``reader(path) -> image`` (default :func:`delira.io.read_image`; see
            :mod:`delira.data.formats.cases`).
        allow_missing: keep going when listed files are missing (they are recorded in
            :attr:`missing_files` instead of raising): what :func:`delira.data.check_dataset` uses to
            report every problem at once. Reading such a case raises ``FileNotFoundError``.
        orientation: None reads the files as stored; ``"RAS"``, ``"LPS"`` or another orientation
            code reads every image and label file reoriented to it (axes permuted and reversed, no
            interpolation; ``spacing``, ``origin`` and ``direction`` describe the reoriented grid;
            see :class:`~delira.data.formats.cases.OrientedReader`). Predictions are then on the
            reoriented grid; ``Preprocessor(orientation=...)`` instead records the reorientation and
            ``invert_labels`` / ``invert_probabilities`` undo it.

    Samples: ``{"data": float32 (C, x, y, z), "seg": int16 (1, x, y, z) (training split),
    "case_id": str, "spacing", "origin", "direction"}``; ``C`` is the number of channels in
    ``dataset.json`` (``modality`` or ``channel_names``).

    Attributes:
        metadata: the parsed ``dataset.json``.
        channel_names: one name per channel.
        label_names: ``{label value: name}``.
        records: one ``{"case_id", "images": [path, ...], "seg": path or None}`` per case.
        missing_files: ``[(case_id, path), ...]`` listed but absent (empty unless ``allow_missing``).

    Raises:
        FileNotFoundError: ``dataset.json`` or listed files are missing (all missing paths listed;
            with ``allow_missing`` only a missing ``dataset.json``).
        ValueError: ``dataset.json`` is malformed, or the split has no case.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "training",
        reader: Reader | None = None,
        *,
        allow_missing: bool = False,
        orientation: str | None = None,
    ) -> None:
        self.root = Path(root)
        if split not in ("training", "test"):
            raise ValueError(f"split must be 'training' or 'test', got {split!r}")
        self.split = split
        meta_path = self.root / "dataset.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{meta_path} does not exist; root must be an MSD / nnU-Net raw dataset folder (with "
                "dataset.json, imagesTr/, labelsTr/)"
            )
        try:
            self.metadata: dict[str, Any] = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{meta_path} is not valid JSON: {exc}") from exc
        channels = self.metadata.get("channel_names") or self.metadata.get("modality") or {"0": "image"}
        self.channel_names = [str(channels[k]) for k in sorted(channels, key=int)]
        self.label_names = self._label_names(self.metadata.get("labels", {}))
        self.file_ending: str | None = self.metadata.get("file_ending")
        records = self._records()
        if not records:
            raise ValueError(
                f"{self.root} has no {split} cases (dataset.json lists none and the folders hold none); "
                "check the folder"
            )
        self.missing_files: list[tuple[str, str]] = [
            (r["case_id"], p)
            for r in records
            for p in (*r["images"], r["seg"])
            if p is not None and not os.path.exists(p)
        ]
        if not allow_missing:
            raise_missing([p for _, p in self.missing_files], f"{meta_path} ({split} split)")
        load = CaseReader(reader, orientation)
        self.orientation: str | None = load.orientation
        super().__init__(records, load, [r["case_id"] for r in records])

    @staticmethod
    def _label_names(labels: Mapping[str, Any]) -> dict[int, str]:
        out: dict[int, str] = {}
        for key, value in labels.items():
            if str(key).lstrip("-").isdigit():  # MSD: {"0": "background"}
                out[int(key)] = str(value)
            elif isinstance(value, int):  # nnU-Net v2: {"background": 0}
                out[value] = str(key)
            else:  # nnU-Net v2 region labels: {"whole tumor": [1, 2, 3]} (kept as the first value)
                out[int(next(iter(value)))] = str(key)
        return dict(sorted(out.items()))

    @property
    def records(self) -> list[dict[str, Any]]:
        """One ``{"case_id": str, "images": [path, ...], "seg": path or None}`` per case."""
        return self.items

    @property
    def declared_labels(self) -> set[int]:
        """Every label value ``dataset.json`` declares (all members of nnU-Net v2 region labels)."""
        out = set(self.label_names)
        for value in self.metadata.get("labels", {}).values():
            if isinstance(value, (list, tuple)):
                out.update(int(v) for v in value)
        return out

    @property
    def num_channels(self) -> int:
        """Number of image channels per case."""
        return len(self.channel_names)

    def _channel_files(self, folder: Path, case_id: str, ending: str) -> list[str]:
        return [str(folder / f"{case_id}_{c:04d}{ending}") for c in range(self.num_channels)]

    def _image_files(self, listed: Path) -> tuple[str, list[str]]:
        stem, ending = _split_ending(listed.name, self.file_ending)
        if listed.exists():
            return stem, [str(listed)]
        channel_files = self._channel_files(listed.parent, stem, ending)
        if not any(os.path.exists(p) for p in channel_files):
            return stem, [str(listed)]  # neither form exists: report the path dataset.json names
        return stem, channel_files

    def _records(self) -> list[dict[str, Any]]:
        listed = self.metadata.get(self.split)
        records = []
        if isinstance(listed, list) and listed:
            for entry in listed:
                if self.split == "training":
                    if not isinstance(entry, Mapping) or "image" not in entry or "label" not in entry:
                        raise ValueError(
                            f"dataset.json 'training' entries must be {{'image': path, 'label': path}}, got {entry!r}"
                        )
                    case_id, images = self._image_files(_relative(self.root, entry["image"]))
                    seg = str(_relative(self.root, entry["label"]))
                else:
                    path = entry["image"] if isinstance(entry, Mapping) else entry
                    case_id, images = self._image_files(_relative(self.root, str(path)))
                    seg = None
                records.append({"case_id": case_id, "images": images, "seg": seg})
            return records
        # nnU-Net v2: the cases are what the folders hold.
        ending = self.file_ending or ".nii.gz"
        images_dir = self.root / ("imagesTr" if self.split == "training" else "imagesTs")
        suffix = f"_0000{ending}"
        case_ids = (
            sorted(p.name[: -len(suffix)] for p in images_dir.glob(f"*{suffix}"))
            if images_dir.is_dir()
            else []
        )
        for case_id in case_ids:
            seg = str(self.root / "labelsTr" / f"{case_id}{ending}") if self.split == "training" else None
            records.append(
                {"case_id": case_id, "images": self._channel_files(images_dir, case_id, ending), "seg": seg}
            )
        return records

    def __repr__(self) -> str:
        oriented = f", orientation={self.orientation!r}" if self.orientation else ""
        return (
            f"DecathlonDataset({str(self.root)!r}, split={self.split!r}, {len(self)} cases, "
            f"channels={self.channel_names}{oriented})"
        )
