"""A CSV logger: one row per epoch, columns added as new metrics appear."""

from __future__ import annotations

import csv
import os
from pathlib import Path

__all__ = ["CSVLogger"]


class CSVLogger:
    """Writes ``{"epoch": step, **metrics}`` rows to ``path``; the file is rewritten when a new
    column appears, so every row has every column (empty where a value is missing).

    Args:
        path: the CSV file (its folder is created).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, float]] = []
        self.columns: list[str] = ["epoch"]

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Append the row ``{"epoch": step, **metrics}`` and rewrite the file."""
        row = {"epoch": step, **metrics}
        self.rows.append(row)
        for key in row:
            if key not in self.columns:
                self.columns.append(key)
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)

    def resume(self, history: list[dict[str, float]]) -> None:
        """Start from the rows of ``history`` (epochs trained before a resume) and rewrite the file."""
        self.rows, self.columns = [], ["epoch"]
        for row in history:
            self.log_metrics({k: v for k, v in row.items() if k != "epoch"}, int(row["epoch"]))

    def close(self) -> None:
        """Nothing to release (each row is written at once)."""
