"""A streaming writer of the safetensors file format (read back with the safetensors library).

Layout (https://huggingface.co/docs/safetensors): an unsigned little-endian 64-bit header size
``N``, ``N`` bytes of UTF-8 JSON (padded with spaces to a multiple of 8), then the tensor bytes.
The header maps each key to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into
the byte buffer, contiguous, in key order) and ``"__metadata__"`` to a ``{str: str}`` dict.

Writing tensor by tensor keeps memory flat (the library's ``save`` builds the whole file in
memory) and leaves atomicity to the caller (:func:`delira.io.atomic_write`).
"""

from __future__ import annotations

import json
import struct
import sys
from typing import Any, BinaryIO

import numpy as np

from .errors import CheckpointError

_NUMPY_DTYPES = {
    "bool": "BOOL",
    "uint8": "U8",
    "int8": "I8",
    "uint16": "U16",
    "int16": "I16",
    "uint32": "U32",
    "int32": "I32",
    "uint64": "U64",
    "int64": "I64",
    "float16": "F16",
    "bfloat16": "BF16",
    "float32": "F32",
    "float64": "F64",
}
_TORCH_DTYPES = {
    "torch.bool": "BOOL",
    "torch.uint8": "U8",
    "torch.int8": "I8",
    "torch.uint16": "U16",
    "torch.int16": "I16",
    "torch.uint32": "U32",
    "torch.int32": "I32",
    "torch.uint64": "U64",
    "torch.int64": "I64",
    "torch.float16": "F16",
    "torch.bfloat16": "BF16",
    "torch.float32": "F32",
    "torch.float64": "F64",
    "torch.float8_e4m3fn": "F8_E4M3",
    "torch.float8_e5m2": "F8_E5M2",
}


def _describe(key: str, value: Any) -> tuple[str, list[int], int]:
    """(safetensors dtype, shape, byte size) of a numpy array or torch tensor."""
    if isinstance(value, np.ndarray):
        dtype = _NUMPY_DTYPES.get(value.dtype.name)
        size = value.nbytes
    else:
        dtype = _TORCH_DTYPES.get(str(value.dtype))
        size = value.numel() * value.element_size()
    if dtype is None:
        raise CheckpointError(
            f"the tensor {key!r} has dtype {value.dtype}, which safetensors cannot store; "
            "use bool, (u)int8-64, float16, bfloat16, float32 or float64"
        )
    return dtype, [int(d) for d in value.shape], int(size)


def _write_bytes(stream: BinaryIO, value: Any) -> None:
    if isinstance(value, np.ndarray):
        flat = np.ascontiguousarray(value).reshape(-1)
        if flat.dtype.byteorder == ">" or (flat.dtype.byteorder == "=" and sys.byteorder == "big"):
            flat = flat.astype(flat.dtype.newbyteorder("<"))
        stream.write(flat.view(np.uint8).data)
        return
    import torch

    flat = value.detach().to("cpu").contiguous().reshape(-1)
    if flat.numel():
        stream.write(flat.view(torch.uint8).numpy().data)


def write_safetensors(stream: BinaryIO, tensors: dict[str, Any], metadata: dict[str, str]) -> None:
    """Write ``tensors`` (``{key: numpy array or torch tensor}``) and ``metadata`` as safetensors."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    keys = sorted(tensors)
    for key in keys:
        dtype, shape, size = _describe(key, tensors[key])
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    stream.write(struct.pack("<Q", len(encoded)))
    stream.write(encoded)
    for key in keys:
        _write_bytes(stream, tensors[key])
