"""Dataset formats on disk: the Medical Segmentation Decathlon / nnU-Net raw layout and manifests."""

from __future__ import annotations

from delira.data.formats.cases import CaseReader, OrientedReader, default_reader
from delira.data.formats.manifest import ManifestDataset
from delira.data.formats.msd import DecathlonDataset

__all__ = ["CaseReader", "DecathlonDataset", "ManifestDataset", "OrientedReader", "default_reader"]
