"""A TensorBoard event-file writer for scalars that needs neither torch nor TensorFlow.

An event file is a sequence of TFRecords: ``u64 length | u32 masked_crc32c(length) | data |
u32 masked_crc32c(data)`` (little endian), each ``data`` an ``Event`` protocol buffer. The few
fields used are encoded by hand:

- ``Event``: ``wall_time`` (1, double), ``step`` (2, int64), ``file_version`` (3, string),
  ``summary`` (5, message);
- ``Summary``: ``value`` (1, repeated message); ``Summary.Value``: ``tag`` (1, string),
  ``simple_value`` (2, float).
"""

from __future__ import annotations

import numbers
import os
import socket
import struct
import time
from pathlib import Path

__all__ = ["TensorBoardLogger", "crc32c", "encode_scalar_event", "masked_crc32c"]


def _make_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _make_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, as an unsigned 32-bit int."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: the CRC rotated right by 15 bits plus 0xA282EAD8 (mod 2**32)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 are 10-byte two's complement varints
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, wire_type: int) -> bytes:
    return _varint((number << 3) | wire_type)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _field(number, 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, body: bytes) -> bytes:
    return _field(1, 1) + struct.pack("<d", wall_time) + _field(2, 0) + _varint(int(step)) + body


def encode_scalar_event(scalars: dict[str, float], step: int, wall_time: float | None = None) -> bytes:
    """The serialized ``Event`` protocol buffer holding ``scalars`` ``{tag: value}`` at ``step``."""
    values = b"".join(
        _length_delimited(1, _length_delimited(1, tag.encode()) + _field(2, 5) + struct.pack("<f", float(v)))
        for tag, v in scalars.items()
    )
    wall = time.time() if wall_time is None else wall_time
    return _event(wall, step, _length_delimited(5, values))


def _record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


class TensorBoardLogger:
    """Writes scalars to ``log_dir/events.out.tfevents.<time>.<host>.<pid>``, readable by
    TensorBoard and ``tf.compat.v1.train.summary_iterator``.

    Args:
        log_dir: folder of the event file (created).
    """

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.path = self.log_dir / f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}"
        self._file = open(self.path, "wb")
        self._file.write(_record(_event(now, 0, _length_delimited(3, b"brain.Event:2"))))
        self._file.flush()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Write the finite-or-not float entries of ``metrics`` as scalars at ``step`` (non-numbers are skipped)."""
        scalars = {
            k: float(v) for k, v in metrics.items() if isinstance(v, numbers.Real) and not isinstance(v, bool)
        }
        if scalars and self._file is not None:
            self._file.write(_record(encode_scalar_event(scalars, step)))
            self._file.flush()

    def close(self) -> None:
        """Close the event file."""
        if self._file is not None:
            self._file.close()
            self._file = None
