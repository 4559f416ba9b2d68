"""Loggers: TensorBoard event files read back by TensorFlow, CSV, MLflow, curves; the package
imports no framework."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
import zlib

import pytest

from delira.training.loggers import CSVLogger, MLflowLogger, TensorBoardLogger, plot_curves
from delira.training.loggers.tensorboard import crc32c, masked_crc32c


def test_crc32c_known_values():
    # the CRC-32C check value of "123456789" (RFC 3720, iSCSI)
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    # the masked CRC is the rotation plus TFRecord's constant
    raw = crc32c(b"abc")
    assert masked_crc32c(b"abc") == ((((raw >> 15) | (raw << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    assert crc32c(b"abc") != zlib.crc32(b"abc")  # Castagnoli, not the zlib polynomial


@pytest.mark.tf
def test_tensorboard_events_read_by_tensorflow(tmp_path):
    import tensorflow as tf

    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"train_loss": 0.5, "val_dice": 0.25, "note": "skipped"}, step=0)
    logger.log_metrics({"train_loss": 0.125}, step=3)
    logger.close()
    # the framing (length and data CRCs) is checked by TFRecordDataset
    records = list(tf.data.TFRecordDataset(str(logger.path)))
    assert len(records) == 3
    events = list(tf.compat.v1.train.summary_iterator(str(logger.path)))
    assert events[0].file_version == "brain.Event:2"
    scalars = [(e.step, v.tag, v.simple_value) for e in events[1:] for v in e.summary.value]
    assert scalars == [(0, "train_loss", 0.5), (0, "val_dice", 0.25), (3, "train_loss", 0.125)]


def test_csv_logger_adds_columns(tmp_path):
    logger = CSVLogger(tmp_path / "m.csv")
    logger.log_metrics({"train_loss": 1.5}, 0)
    logger.log_metrics({"train_loss": 0.5, "val_loss": 0.75}, 1)
    with open(tmp_path / "m.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [
        {"epoch": "0", "train_loss": "1.5", "val_loss": ""},
        {"epoch": "1", "train_loss": "0.5", "val_loss": "0.75"},
    ]


def test_curves_png(tmp_path):
    path = plot_curves(
        [{"epoch": 0, "train_loss": 1.0, "val_dice": 0.1}, {"epoch": 1, "train_loss": 0.5}],
        tmp_path / "c.png",
    )
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is not None, reason="mlflow is installed")
def test_mlflow_missing_says_how_to_install(tmp_path):
    with pytest.raises(ImportError, match="pip install mlflow"):
        MLflowLogger(tmp_path)


@pytest.mark.skipif(
    importlib.util.find_spec("mlflow") is None, reason="mlflow is not installed (pip install mlflow)"
)
def test_mlflow_logs_to_a_local_store(tmp_path):
    import mlflow

    logger = MLflowLogger(tmp_path / "mlruns", experiment_name="t", params={"lr": 0.1})
    run_id = logger.run.info.run_id
    logger.log_metrics({"train_loss": 0.5}, 0)
    logger.log_metrics({"train_loss": 0.25}, 1)
    logger.close()
    client = mlflow.tracking.MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
    history = client.get_metric_history(run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 0.25)]


def test_import_loads_no_framework():
    code = (
        "import sys, delira.training, delira.training.metrics, delira.training.loggers, delira.training.callbacks;"
        "bad = [m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
