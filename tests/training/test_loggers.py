"""Loggers: TensorBoard event files read back by TensorFlow, CSV, curves; MLflow read back through
its client from a local sqlite store, Weights & Biases from the offline run folder (nothing goes
to the network); the package imports no framework."""

from __future__ import annotations

import csv
import json
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from delira.training.callbacks import Callback
from delira.training.loggers import (
    EXPERIMENT_ARTIFACTS,
    CSVLogger,
    MLflowLogger,
    TensorBoardLogger,
    WandbLogger,
    flatten_params,
    plot_curves,
)
from delira.training.loggers._run import param_value
from delira.training.loggers.tensorboard import crc32c, masked_crc32c

# mlflow's sqlite store trips a SQLAlchemy deprecation inside mlflow itself
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")


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


# --- MLflow and Weights & Biases: a tiny trainer, read back through mlflow's client and W&B's files --

# A nested config as an experiment has one, and its flattened MLflow params written out by hand.
CONFIG = {
    "name": "tiny",
    "data": {"augmentation": {"rotation": 15, "mirror": [0, 1]}, "patch": None},
    "training": {"lr": 0.02, "amp": False, "optimizer": "adam"},
    "model": {"args": {}},
}
CONFIG_PARAMS = {
    "name": "tiny",
    "data.augmentation.rotation": "15",
    "data.augmentation.mirror": "[0, 1]",
    "data.patch": "null",
    "training.lr": "0.02",
    "training.amp": "false",
    "training.optimizer": "adam",
    "model.args": "{}",
}
FOLD_FILES = ["checkpoints/best.safetensors", "curves.png", "metrics.csv", "result.json"]


pytestmark = pytest.mark.usefixtures("offline_tracking")


@pytest.fixture
def wandb_offline():
    """wandb, torn down after the test: it reads the ``WANDB_*`` folders once per process, so the
    next test's tmp_path folders take effect. A test calls ``teardown()`` itself before reading a
    run folder: ``run.finish()`` returns before wandb's service has closed the run's file."""
    wandb = pytest.importorskip(
        "wandb", reason="wandb is not installed (pip install 'delira-training[wandb]')"
    )
    yield wandb
    wandb.teardown()


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """One local MLflow store (a folder: sqlite database and artifacts) for the module's tests;
    each test uses its own experiment."""
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install 'delira-training[mlflow]')")
    return tmp_path_factory.mktemp("mlflow")


def _client(store):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")


class _RaiseAt(Callback):
    """Raises ``error`` at the end of epoch ``epoch`` (before the trainer logs that epoch)."""

    def __init__(self, epoch, error):
        self.epoch, self.error = epoch, error

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch == self.epoch:
            raise self.error


def _train(save_dir, logger, epochs=2, callbacks=(), resume_from=None):
    """A tiny fold: a 2-level UNet on 8^3 threshold volumes, trained ``epochs`` epochs into
    ``save_dir`` with ``logger``; writes the fold's ``result.json`` as the experiment does."""
    import torch

    from delira.data import DataLoader
    from delira.models.torch import UNet
    from delira.training import PyTorchNetworkTrainer, metrics

    from .conftest import threshold_cases

    torch.manual_seed(0)
    trainer = PyTorchNetworkTrainer(
        UNet(spatial_dims=3, num_classes=2, features=(4, 8)),
        {"ce": torch.nn.CrossEntropyLoss()},
        lr=2e-2,
        metrics={"dice": metrics.segmentation_metric("dice", 2)},
        callbacks=list(callbacks),
        save_dir=save_dir,
        verbose=False,
        loggers=[logger],
    )
    train = DataLoader(threshold_cases(8, seed=0), batch_size=4, shuffle=True, seed=3)
    val = DataLoader(threshold_cases(4, seed=1), batch_size=4)
    history = trainer.fit(train, val, epochs=epochs, resume_from=resume_from)
    result = {"fold": 0, "epochs": len(history), "metrics": {"dice_mean": history[-1]["val_dice"]}}
    (save_dir / "result.json").write_text(json.dumps(result))
    return history


def _metrics_csv(save_dir):
    """``{key: {epoch: value}}`` from the trainer's metrics.csv (the reference)."""
    with open(save_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    table = {}
    for row in rows:
        for key, text in row.items():
            if key != "epoch" and text != "":
                table.setdefault(key, {})[int(row["epoch"])] = float(text)
    return table


def _mlflow_artifacts(client, run_id, path=None):
    out = []
    for info in client.list_artifacts(run_id, path):
        out += _mlflow_artifacts(client, run_id, info.path) if info.is_dir else [info.path]
    return sorted(out)


def test_flatten_params_dotted_keys():
    assert flatten_params(CONFIG) == {
        "name": "tiny",
        "data.augmentation.rotation": 15,
        "data.augmentation.mirror": [0, 1],
        "data.patch": None,
        "training.lr": 0.02,
        "training.amp": False,
        "training.optimizer": "adam",
        "model.args": {},
    }
    with pytest.raises(TypeError, match="params must be a mapping"):
        flatten_params([("lr", 0.1)])
    # parameter text: JSON for non-strings, numpy scalars as numbers, paths as text
    assert [param_value(v) for v in ("adam", 15, None, True, [0, 1], {})] == [
        "adam",
        "15",
        "null",
        "true",
        "[0, 1]",
        "{}",
    ]
    assert param_value((np.int64(5), np.float32(0.5))) == "[5, 0.5]"
    assert param_value(Path("/data/task01")) == "/data/task01"


@pytest.mark.parametrize(
    ("cls", "module", "extra"), [(MLflowLogger, "mlflow", "mlflow"), (WandbLogger, "wandb", "wandb")]
)
def test_missing_library_names_the_extra(monkeypatch, tmp_path, cls, module, extra):
    from delira.io import MissingDependencyError

    monkeypatch.setitem(sys.modules, module, None)  # import fails as if it were not installed
    with pytest.raises(
        MissingDependencyError, match=re.escape(f"pip install 'delira-training[{extra}]'")
    ) as info:
        cls()
    assert isinstance(info.value, ImportError) and f"pip install {module}" in str(info.value)


@pytest.mark.torch
def test_mlflow_run_of_a_fold_read_back_by_the_client(tmp_path, mlflow_store):
    import mlflow

    save_dir = tmp_path / "fold_0"
    logger = MLflowLogger(
        mlflow_store,
        "fold-run",
        run_name="fold_0",
        params=CONFIG,
        tags={"fold": 0, "task": "seg"},
        artifacts_dir=save_dir,
        finish_on_close=False,
    )
    _train(save_dir, logger, epochs=3)
    assert logger.status is None  # the trainer's close leaves it open for the fold's files
    logger.finish()

    client = _client(mlflow_store)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "fold_0"
    assert client.get_experiment(run.info.experiment_id).name == "fold-run"
    assert run.data.params == CONFIG_PARAMS
    assert run.data.tags["fold"] == "0" and run.data.tags["task"] == "seg"
    reference = _metrics_csv(save_dir)
    assert {"train_loss", "lr", "val_loss", "val_dice"} <= set(reference)
    assert set(run.data.metrics) == set(reference)
    for key, by_epoch in reference.items():
        logged = {m.step: m.value for m in client.get_metric_history(logger.run_id, key)}
        assert logged == by_epoch, key
    assert _mlflow_artifacts(client, logger.run_id) == FOLD_FILES
    for name in FOLD_FILES:
        local = mlflow.artifacts.download_artifacts(
            run_id=logger.run_id,
            artifact_path=name,
            dst_path=str(tmp_path / "down"),
            tracking_uri=logger.tracking_uri,
        )
        assert Path(local).read_bytes() == (save_dir / name).read_bytes(), name
    # the artifacts live in the store folder, not in the working directory
    assert run.info.artifact_uri.startswith((mlflow_store / "artifacts").as_uri())


@pytest.mark.torch
@pytest.mark.parametrize(
    ("error", "status"), [(RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")]
)
def test_mlflow_run_ends_failed_when_training_raises(tmp_path, mlflow_store, error, status):
    save_dir = tmp_path / "fold_0"
    logger = MLflowLogger(mlflow_store, "failing", artifacts_dir=save_dir, finish_on_close=False)
    with pytest.raises(type(error)):
        _train(save_dir, logger, epochs=3, callbacks=[_RaiseAt(1, error)])
    assert logger.status == status
    client = _client(mlflow_store)
    assert client.get_run(logger.run_id).info.status == status
    # epoch 0 was logged, epoch 1 raised before the trainer logged it; no artifacts on failure
    steps = [m.step for m in client.get_metric_history(logger.run_id, "train_loss")]
    assert steps == [0]
    assert _mlflow_artifacts(client, logger.run_id) == []
    logger.finish()  # a no-op once ended
    with pytest.raises(RuntimeError, match="already ended"):
        logger.log_metrics({"x": 1.0}, 0)


@pytest.mark.torch
def test_mlflow_resumed_fold_continues_its_run(tmp_path, mlflow_store):
    save_dir = tmp_path / "fold_0"
    first = MLflowLogger(mlflow_store, "resumed", run_name="fold_0")
    with pytest.raises(RuntimeError):
        _train(save_dir, first, epochs=4, callbacks=[_RaiseAt(2, RuntimeError("pre-empted"))])
    # the continued run gets the epochs after the checkpoint; a fresh run gets every epoch
    again = MLflowLogger(mlflow_store, "resumed", run_id=first.run_id)
    fresh = MLflowLogger(mlflow_store, "resumed", run_name="fold_0 fresh")
    again.resume([{"epoch": 0, "train_loss": 123.0}])  # epoch 0 is in the run already: skipped
    _train(save_dir, again, epochs=4, resume_from="last")
    fresh.resume([{"epoch": e, **{k: v[e] for k, v in _metrics_csv(save_dir).items()}} for e in range(4)])
    fresh.finish()
    client = _client(mlflow_store)
    reference = _metrics_csv(save_dir)
    assert sorted(reference["train_loss"]) == [0, 1, 2, 3]
    for run_id in (first.run_id, fresh.run_id):
        assert client.get_run(run_id).info.status == "FINISHED"
        for key, by_epoch in reference.items():
            history = client.get_metric_history(run_id, key)
            assert sorted(m.step for m in history) == sorted(by_epoch), key  # each epoch once
            assert {m.step: m.value for m in history} == by_epoch, key


def test_mlflow_nested_runs_per_fold(tmp_path, mlflow_store):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text(json.dumps({"mean": {"dice_mean": 0.5}}))
    (run_dir / "config.yaml").write_text("name: tiny\n")
    with MLflowLogger(
        mlflow_store,
        "nested",
        run_name="cv",
        params=CONFIG,
        artifacts_dir=run_dir,
        artifacts=EXPERIMENT_ARTIFACTS,
    ) as parent:
        parent.add_artifact(run_dir / "config.yaml", "inputs/resolved.yaml")  # a file under another name
        for k in range(2):
            fold = parent.child(f"fold_{k}", tags={"fold": k})
            fold.log_metrics({"train_loss": 1.0 / (k + 1), "note": "skipped", "flag": True}, 0)
            fold.close()  # as the trainer does: no error in flight, finish_on_close -> FINISHED
    client = _client(mlflow_store)
    children = client.search_runs(
        [parent.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.run_id}'"
    )
    assert sorted(r.info.run_name for r in children) == ["fold_0", "fold_1"]
    assert {r.info.run_name: r.data.metrics for r in children} == {
        "fold_0": {"train_loss": 1.0},
        "fold_1": {"train_loss": 0.5},
    }
    assert all(r.info.status == "FINISHED" for r in children)
    assert client.get_run(parent.run_id).data.params == CONFIG_PARAMS
    assert _mlflow_artifacts(client, parent.run_id) == ["config.yaml", "inputs/resolved.yaml", "summary.json"]
    copy = client.download_artifacts(parent.run_id, "inputs/resolved.yaml", str(tmp_path / "down"))
    assert Path(copy).read_bytes() == (run_dir / "config.yaml").read_bytes()


def test_mlflow_run_left_open_ends_failed_at_exit(monkeypatch, mlflow_store):
    from delira.training.loggers import _run

    hooks = []
    monkeypatch.setattr(_run.atexit, "register", hooks.append)
    monkeypatch.setattr(_run.atexit, "unregister", hooks.remove)
    logger = MLflowLogger(mlflow_store, "left-open", finish_on_close=False)
    logger.close()  # the trainer's close without an error: still open
    assert logger.status is None and len(hooks) == 1
    hooks[0]()  # what the interpreter runs at exit
    assert _client(mlflow_store).get_run(logger.run_id).info.status == "FAILED"
    assert hooks == []  # finish unregisters it


def test_mlflow_bad_arguments(mlflow_store):
    with pytest.raises(ValueError, match="experiment_name"):
        MLflowLogger(mlflow_store, "")
    with pytest.raises(TypeError, match="artifacts must be a sequence"):
        MLflowLogger(mlflow_store, "bad", artifacts="metrics.csv")
    with MLflowLogger(mlflow_store, "bad") as logger:
        with pytest.raises(FileNotFoundError, match="does not exist"):
            logger.add_artifact(mlflow_store / "missing.txt")
    with pytest.raises(ValueError, match="status must be one of"):
        logger.finish("DONE")


# --- W&B offline: the run folder parsed as wandb writes it ---------------------------------------


def _wandb_records(run_dir):
    """The records of ``run_dir/run-<id>.wandb``: a 7-byte header (``:W&B``, magic 0xBEE1, version
    0), then LevelDB-log framing in 32 KiB blocks (each chunk ``u32 crc32 | u16 length | u8 type |
    data``, the CRC over type and data; types full/first/middle/last), each record a
    ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0)
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # the tail of a block too short for a chunk header is padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if (crc, length, kind) == (0, 0, 0):
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc
        pos += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _wandb_run(run_dir):
    """``(run record, config, history rows, artifact records, exit code)`` of an offline run."""
    records = _wandb_records(run_dir)
    kinds = [r.WhichOneof("record_type") for r in records]
    (run,) = [r.run for r, k in zip(records, kinds) if k == "run"]
    config = {i.key: json.loads(i.value_json) for i in run.config.update if i.key != "_wandb"}
    for r, k in zip(records, kinds):
        if k == "config":
            config.update({i.key: json.loads(i.value_json) for i in r.config.update if i.key != "_wandb"})
    rows = [
        {i.nested_key[0] if i.nested_key else i.key: json.loads(i.value_json) for i in r.history.item}
        for r, k in zip(records, kinds)
        if k == "history"
    ]
    artifacts = [r.artifact for r, k in zip(records, kinds) if k == "artifact"]
    (exit_code,) = [r.exit.exit_code for r, k in zip(records, kinds) if k == "exit"]
    return run, config, rows, artifacts, exit_code


@pytest.mark.torch
def test_wandb_offline_run_of_a_fold(tmp_path, wandb_offline):
    save_dir = tmp_path / "fold_0"
    logger = WandbLogger(
        "delira-test",
        "fold_0",
        params=CONFIG,
        group="tiny-cv",
        job_type="fold",
        tags=["unet", "tiny"],
        save_dir=tmp_path / "wandb",
        offline=True,
        artifacts_dir=save_dir,
        finish_on_close=False,
    )
    _train(save_dir, logger, epochs=3)
    logger.finish()
    assert logger.status == "FINISHED"
    wandb_offline.teardown()  # waits until wandb's service has written the run folder
    assert logger.run_dir.parent == tmp_path / "wandb" / "wandb" and logger.run_dir.name.startswith(
        "offline-run-"
    )

    run, config, rows, artifacts, exit_code = _wandb_run(logger.run_dir)
    assert exit_code == 0
    assert (run.project, run.display_name, run.run_group, run.job_type) == (
        "delira-test",
        "fold_0",
        "tiny-cv",
        "fold",
    )
    assert list(run.tags) == ["unet", "tiny"]
    assert config == CONFIG
    reference = _metrics_csv(save_dir)
    assert [row["_step"] for row in rows] == [0, 1, 2] and [row["epoch"] for row in rows] == [0, 1, 2]
    for key, by_epoch in reference.items():
        assert {row["epoch"]: row[key] for row in rows if key in row} == by_epoch, key
    (artifact,) = artifacts
    assert (artifact.name, artifact.type) == (f"fold_0-{logger.run_id}", "model")
    files = {entry.path: entry for entry in artifact.manifest.contents}
    assert sorted(files) == FOLD_FILES
    for name, entry in files.items():
        original = (save_dir / name).read_bytes()
        assert entry.size == len(original)
        assert Path(entry.local_path).read_bytes() == original, name  # the staged copy wandb sync uploads


@pytest.mark.torch
def test_wandb_offline_run_fails_when_training_raises(tmp_path, wandb_offline):
    save_dir = tmp_path / "fold_0"
    logger = WandbLogger("delira-test", "fold_0", offline=True, artifacts_dir=save_dir, finish_on_close=False)
    with pytest.raises(RuntimeError, match="boom"):
        _train(save_dir, logger, epochs=3, callbacks=[_RaiseAt(1, RuntimeError("boom"))])
    assert logger.status == "FAILED"
    wandb_offline.teardown()
    assert logger.run_dir.parent == tmp_path / "wandb-home" / "wandb"  # WANDB_DIR
    _, _, rows, artifacts, exit_code = _wandb_run(logger.run_dir)
    assert exit_code == 1 and artifacts == []
    assert [row["epoch"] for row in rows] == [0]
    assert rows[0]["train_loss"] == _metrics_csv(save_dir)["train_loss"][0]


def test_import_loads_no_framework():
    code = (
        "import sys, delira.training, delira.training.metrics, delira.training.loggers, delira.training.callbacks;"
        "bad = [m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
