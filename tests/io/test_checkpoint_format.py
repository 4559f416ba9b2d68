"""The checkpoint file format: plain safetensors with a versioned JSON header, no pickle."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from delira.io import (
    CheckpointError,
    CheckpointFormatError,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)

torch = pytest.importorskip("torch")
safetensors_numpy = pytest.importorskip("safetensors.numpy")
pytestmark = pytest.mark.torch


def _parse_by_hand(path):
    """The safetensors layout from its specification: u64 header size, JSON header, raw bytes."""
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    return header, data[8 + size :]


def test_file_is_safetensors_with_a_versioned_json_header(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    save_checkpoint(
        tmp_path / "c.safetensors", model, optimizer, epoch=4, metrics={"loss": 1.5}, config={"a": 1}
    )
    header, buffer = _parse_by_hand(tmp_path / "c.safetensors")
    meta = header.pop("__metadata__")
    assert meta["format"] == "delira-checkpoint" and meta["format_version"] == "1"
    state = json.loads(meta["state"])
    assert {
        "framework",
        "created",
        "epoch",
        "metrics",
        "extra",
        "config",
        "versions",
        "optimizers",
        "rng",
    } <= set(state)
    assert state["framework"] == "torch" and state["epoch"] == 4 and state["metrics"] == {"loss": 1.5}
    # the weights are raw little-endian float32 at the offsets the header gives
    entry = header["model/weight"]
    assert entry["dtype"] == "F32" and entry["shape"] == [2, 3]
    begin, end = entry["data_offsets"]
    np.testing.assert_array_equal(
        np.frombuffer(buffer[begin:end], "<f4").reshape(2, 3), model.weight.detach().numpy()
    )
    # optimizer tensors are referenced from the JSON by key
    saved_state = state["optimizers"]["state"]["optimizer"]["state_dict"]["state"]
    first_index, first_slots = saved_state["$dict"][0]  # int keys: a "$dict" of [key, value] pairs
    assert first_index == 0
    assert header[first_slots["momentum_buffer"]["$tensor"]]["shape"] == [2, 3]
    assert state["rng"]["torch_cpu"]["$tensor"] in header
    assert len(state["rng"]["python"]["state"]) == 625 and len(state["rng"]["numpy"]["keys"]) == 624
    # the official reader agrees
    tensors = safetensors_numpy.load_file(str(tmp_path / "c.safetensors"))
    np.testing.assert_array_equal(tensors["model/bias"], model.bias.detach().numpy())


def _fake(path, metadata):
    safetensors_numpy.save_file({"model/weight": np.zeros((2, 3), np.float32)}, str(path), metadata=metadata)


def test_newer_format_version_says_to_upgrade(tmp_path):
    _fake(tmp_path / "c.safetensors", {"format": "delira-checkpoint", "format_version": "2", "state": "{}"})
    with pytest.raises(CheckpointFormatError, match=r"format version 2, newer .* upgrade delira-io"):
        load_checkpoint(tmp_path / "c.safetensors", torch.nn.Linear(3, 2))


@pytest.mark.parametrize("version", ["0", "one", ""])
def test_unknown_format_version_says_so(tmp_path, version):
    _fake(
        tmp_path / "c.safetensors", {"format": "delira-checkpoint", "format_version": version, "state": "{}"}
    )
    with pytest.raises(CheckpointFormatError, match="unknown checkpoint format version"):
        read_checkpoint_info(tmp_path / "c.safetensors")


def test_damaged_state_says_what_is_missing(tmp_path):
    _fake(
        tmp_path / "c.safetensors",
        {"format": "delira-checkpoint", "format_version": "1", "state": '{"epoch": 1}'},
    )
    with pytest.raises(
        CheckpointFormatError, match=r"damaged checkpoint header: the state lacks \['framework'"
    ):
        read_checkpoint_info(tmp_path / "c.safetensors")


def test_plain_safetensors_file_is_not_a_checkpoint(tmp_path):
    _fake(tmp_path / "w.safetensors", None)
    with pytest.raises(CheckpointFormatError, match="not a delira checkpoint"):
        load_checkpoint(tmp_path / "w.safetensors", torch.nn.Linear(3, 2))


def test_corrupt_and_truncated_files_are_checkpoint_errors(tmp_path):
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 5 + b"not a checkpoint")
    with pytest.raises(CheckpointFormatError, match=r"garbage\.safetensors.*not a readable safetensors"):
        load_checkpoint(tmp_path / "garbage.safetensors", torch.nn.Linear(3, 2))
    save_checkpoint(tmp_path / "c.safetensors", torch.nn.Linear(300, 200))
    data = (tmp_path / "c.safetensors").read_bytes()
    (tmp_path / "c.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFormatError, match=r"c\.safetensors"):
        load_checkpoint(tmp_path / "c.safetensors", torch.nn.Linear(300, 200))


def test_save_needs_an_existing_folder_and_a_file_name(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist; create it first"):
        save_checkpoint(tmp_path / "missing" / "c.safetensors", torch.nn.Linear(1, 1))
    with pytest.raises(CheckpointError, match="is a folder"):
        save_checkpoint(tmp_path, torch.nn.Linear(1, 1))


def test_unsupported_model_type_says_what_is_expected(tmp_path):
    with pytest.raises(
        CheckpointError, match=r"cannot checkpoint a builtins\.dict; expected a torch\.nn\.Module or a Keras"
    ):
        save_checkpoint(tmp_path / "c.safetensors", {"weights": 1})


def test_numpy_arrays_of_every_dtype_survive_in_extra(tmp_path):
    extra = {
        name: (np.arange(6) % 2).astype(name).reshape(2, 3)
        for name in (
            "bool",
            "uint8",
            "int8",
            "uint16",
            "int16",
            "uint32",
            "int32",
            "uint64",
            "int64",
            "float16",
            "float32",
            "float64",
        )
    }
    extra["big_endian"] = np.arange(4, dtype=">f8")
    extra["scalar"] = np.array(2.5)
    save_checkpoint(tmp_path / "c.safetensors", torch.nn.Linear(1, 1), extra=extra)
    info = read_checkpoint_info(tmp_path / "c.safetensors")
    for name, array in extra.items():
        assert info.extra[name].shape == array.shape, name
        assert info.extra[name].dtype == array.dtype.newbyteorder("="), name
        np.testing.assert_array_equal(info.extra[name], array)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float64", "bool", "int8", "float8_e4m3fn"])
def test_torch_tensors_of_every_dtype_round_trip(tmp_path, dtype):
    dtype = getattr(torch, dtype)
    values = torch.arange(-3, 9, dtype=torch.float32).reshape(3, 4).T  # a non-contiguous view
    tensor = values.to(dtype)
    save_checkpoint(
        tmp_path / "c.safetensors", torch.nn.Linear(1, 1), extra={"t": tensor, "scalar": tensor[0, 0]}
    )
    info = read_checkpoint_info(tmp_path / "c.safetensors")
    assert info.extra["t"].dtype == dtype and info.extra["t"].shape == (4, 3)
    assert torch.equal(info.extra["t"].float(), tensor.float())
    assert info.extra["scalar"].shape == () and info.extra["scalar"].float() == tensor[0, 0].float()


def test_half_precision_model_round_trip(tmp_path):
    model = torch.nn.Linear(5, 3).to(torch.bfloat16)
    save_checkpoint(tmp_path / "c.safetensors", model)
    fresh = torch.nn.Linear(5, 3).to(torch.bfloat16)
    load_checkpoint(tmp_path / "c.safetensors", fresh)
    assert fresh.weight.dtype == torch.bfloat16 and torch.equal(fresh.weight, model.weight)
