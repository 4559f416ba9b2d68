"""Orientation codes and reorientation to a canonical orientation (RAS, LPS or any axis code).

An *orientation code* has one letter per spatial array axis naming the patient direction in which
that axis's voxel index **increases** ("points to"): ``L``/``R`` (left/right), ``P``/``A``
(posterior/anterior), ``S``/``I`` (superior/inferior). This is the convention of DICOM, nibabel
(``aff2axcodes``), MONAI (``Orientation(axcodes=...)``), TorchIO and SimpleITK's ``DICOMOrient``:
an :class:`~delira.io.Image` with the identity direction (its world is LPS) is ``"LPS"``, a NIfTI
with the identity RAS affine is ``"RAS"``. (ITK's legacy ``SpatialOrientation`` enum names the
opposite ends: its ``RAI`` is the identity direction.)

The code of an oblique image is its *closest* axis code, chosen as nibabel's ``io_orientation``
does: the direction matrix is replaced by its closest orthogonal matrix (polar factor of the SVD),
then each array axis in turn takes the world axis it is most aligned with among those not taken.

Reorientation only permutes and reverses the spatial array axes (no interpolation, bit-exact) and
updates spacing, origin and direction so that every voxel keeps its world position. It is recorded
as an :class:`OrientationTransform` (JSON-friendly with :meth:`~OrientationTransform.to_dict`),
which undoes itself on an image, an array (e.g. a prediction) or a geometry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from ._image import Image

__all__ = [
    "CANONICAL",
    "OrientationTransform",
    "check_orientation",
    "orientation_codes",
    "orientation_transform",
    "reorient",
]

#: the two canonical orientations: nibabel's / MONAI's ``RAS`` and ITK's / DICOM's ``LPS``
CANONICAL = ("RAS", "LPS")

# The letters at the positive and negative end of each LPS world axis.
_POSITIVE = ("L", "P", "S")
_NEGATIVE = ("R", "A", "I")
_LETTER_AXIS = {
    **{c: (a, 1) for a, c in enumerate(_POSITIVE)},
    **{c: (a, -1) for a, c in enumerate(_NEGATIVE)},
}

Code = Union[str, Sequence[str]]


def _code_error(code: Any, ndim: int, why: str) -> ValueError:
    pairs = ", ".join(f"one of {p}/{n}" for p, n in zip(_POSITIVE[:ndim], _NEGATIVE[:ndim]))
    example = "'RAS' or 'LPS'" if ndim == 3 else f"{'RAS'[:ndim]!r} or {'LPS'[:ndim]!r}"
    return ValueError(
        f"orientation {code!r} is not an orientation code for {ndim} spatial axes ({why}); give "
        f"{ndim} letters, {pairs}, e.g. {example}"
    )


def _parse_code(code: Code, ndim: int) -> list[tuple[int, int]]:
    """``code`` -> ``[(world axis, sign)]`` per array axis; a 3-letter code for fewer axes drops the
    letters of the world axes the image does not span (``"RAS"`` is ``"RA"`` in 2D)."""
    if not 1 <= ndim <= 3:
        raise ValueError(f"orientation codes need 1 to 3 spatial axes; the image has {ndim}")
    if isinstance(code, str):
        letters = list(code.upper())
    elif isinstance(code, Sequence) and all(isinstance(c, str) and len(c) == 1 for c in code):
        letters = [c.upper() for c in code]
    else:
        raise TypeError(
            f"orientation must be a string of axis letters such as 'RAS' or 'LPS', got {type(code).__name__} "
            f"{code!r}"
        )
    unknown = [c for c in letters if c not in _LETTER_AXIS]
    if unknown:
        raise _code_error(code, ndim, f"unknown letter(s) {unknown}")
    axes = [_LETTER_AXIS[c] for c in letters]
    if len(axes) == 3 and ndim < 3:
        axes = [a for a in axes if a[0] < ndim]
    if len(axes) != ndim:
        raise _code_error(code, ndim, f"{len(letters)} letters")
    worlds = [w for w, _ in axes]
    if sorted(worlds) != list(range(ndim)):
        raise _code_error(code, ndim, "each pair must occur exactly once")
    return axes


def check_orientation(code: Code) -> str:
    """``code`` as an upper-case orientation code string (1 to 3 letters, e.g. ``"RAS"``).

    Raises:
        TypeError: ``code`` is not a string (or a sequence of letters).
        ValueError: it is not an orientation code; the message says why and what to give.
    """
    size = len(code) if isinstance(code, Sequence) else 3
    return _format_code(_parse_code(code, size if 1 <= size <= 3 else 3))


def _format_code(axes: Sequence[tuple[int, int]]) -> str:
    return "".join(_POSITIVE[w] if s > 0 else _NEGATIVE[w] for w, s in axes)


def _closest_axes(direction: np.ndarray) -> list[tuple[int, int]]:
    """``[(world axis, sign)]`` per array axis of the closest axis-aligned orientation."""
    u, _, vt = np.linalg.svd(direction)
    rotation = u @ vt  # the orthogonal matrix closest to direction
    free = np.ones(rotation.shape[0], dtype=bool)
    out = []
    for axis in range(rotation.shape[1]):
        column = np.where(free, np.abs(rotation[:, axis]), -1.0)
        world = int(np.argmax(column))
        out.append((world, -1 if rotation[world, axis] < 0 else 1))
        free[world] = False
    return out


def _direction_of(image_or_direction: Image | np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    if isinstance(image_or_direction, Image):
        return np.asarray(image_or_direction.direction, dtype=np.float64)
    direction = np.asarray(image_or_direction, dtype=np.float64)
    if direction.ndim != 2 or direction.shape[0] != direction.shape[1] or not 1 <= direction.shape[0] <= 3:
        raise ValueError(
            f"direction has shape {direction.shape}; pass a delira.io.Image or a square (ndim, ndim) matrix "
            "(ndim 1 to 3) whose columns are the world directions of the array axes"
        )
    if not np.all(np.isfinite(direction)) or abs(np.linalg.det(direction)) < 1e-6:
        raise ValueError(f"direction must be an invertible finite matrix, got {direction.tolist()}")
    return direction


def orientation_codes(image_or_direction: Image | np.ndarray | Sequence[Sequence[float]]) -> str:
    """The closest orientation code of an image, e.g. ``"LPS"`` (identity direction) or ``"RAS"``.

    Args:
        image_or_direction: a :class:`~delira.io.Image`, or its ``(ndim, ndim)`` direction matrix
            (columns: the LPS world directions of the array axes).

    Returns:
        One letter per spatial axis (``ndim`` letters), as nibabel's ``aff2axcodes`` of the
        equivalent RAS affine.
    """
    return _format_code(_closest_axes(_direction_of(image_or_direction)))


@dataclass(frozen=True)
class OrientationTransform:
    """A permutation and reversal of the spatial array axes: the record of a reorientation.

    Output spatial axis ``k`` is input axis ``perm[k]``, reversed when ``flip[k]``: the output voxel
    ``j`` is the input voxel ``i`` with ``i[perm[k]] = shape[perm[k]] - 1 - j[k]`` if ``flip[k]`` else
    ``j[k]``. Applying it to an image permutes/reverses the array and updates the geometry so that
    world positions are unchanged; :meth:`invert` (or :meth:`inverse`) undoes it bit-exactly.

    Attributes:
        perm: a permutation of ``range(ndim)``.
        flip: one bool per output axis.
        shape: the input's spatial shape (what :meth:`apply` accepts).
        source: the orientation code of the input (e.g. ``"LAS"``), informative.
        target: the orientation code of the output (e.g. ``"RAS"``), informative.
    """

    perm: tuple[int, ...]
    flip: tuple[bool, ...]
    shape: tuple[int, ...]
    source: str = ""
    target: str = ""

    def __post_init__(self) -> None:
        perm = tuple(int(p) for p in self.perm)
        flip = tuple(bool(f) for f in self.flip)
        shape = tuple(int(n) for n in self.shape)
        ndim = len(perm)
        if sorted(perm) != list(range(ndim)) or not 1 <= ndim <= 3:
            raise ValueError(f"perm must be a permutation of range(ndim) with ndim 1 to 3, got {self.perm}")
        if len(flip) != ndim or len(shape) != ndim or any(n < 1 for n in shape):
            raise ValueError(
                f"flip {self.flip} and shape {self.shape} must have one entry per axis of perm {perm} "
                "(flip: bools, shape: sizes >= 1)"
            )
        for name in ("source", "target"):
            value = getattr(self, name)
            if value:
                _parse_code(value, ndim)
                object.__setattr__(self, name, str(value).upper())
        object.__setattr__(self, "perm", perm)
        object.__setattr__(self, "flip", flip)
        object.__setattr__(self, "shape", shape)

    # -- properties ---------------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """The number of spatial axes."""
        return len(self.perm)

    @property
    def target_shape(self) -> tuple[int, ...]:
        """The output's spatial shape: ``shape`` permuted."""
        return tuple(self.shape[p] for p in self.perm)

    @property
    def is_identity(self) -> bool:
        """True when the transform changes nothing."""
        return self.perm == tuple(range(self.ndim)) and not any(self.flip)

    def inverse(self) -> OrientationTransform:
        """The transform that undoes this one (its input is this one's output)."""
        perm = [0] * self.ndim
        for k, p in enumerate(self.perm):
            perm[p] = k
        flip = tuple(self.flip[perm[m]] for m in range(self.ndim))
        return OrientationTransform(tuple(perm), flip, self.target_shape, self.target, self.source)

    def then(self, other: OrientationTransform) -> OrientationTransform:
        """This transform followed by ``other`` (whose input is this one's output), as one transform."""
        if not isinstance(other, OrientationTransform):
            raise TypeError(f"then() takes an OrientationTransform, got {type(other).__name__}")
        if other.shape != self.target_shape:
            raise ValueError(
                f"cannot chain: this transform outputs the spatial shape {self.target_shape} but the next "
                f"one takes {other.shape}"
            )
        perm = tuple(self.perm[p] for p in other.perm)
        flip = tuple(other.flip[k] != self.flip[other.perm[k]] for k in range(self.ndim))
        return OrientationTransform(perm, flip, self.shape, self.source, other.target)

    # -- arrays ---------------------------------------------------------------------------------------
    def _check_array(self, array: np.ndarray, axis: int, expected: tuple[int, ...], what: str) -> int:
        if not isinstance(axis, (int, np.integer)) or axis < 0 or axis + self.ndim > array.ndim:
            raise ValueError(
                f"axis must be the index of the first spatial axis (0 <= axis <= {array.ndim - self.ndim}) "
                f"of an array with {self.ndim} spatial axes, got axis={axis!r} for shape {array.shape}"
            )
        got = tuple(array.shape[axis : axis + self.ndim])
        if got != expected:
            raise ValueError(
                f"the array to {what} has spatial shape {got} (axes {axis}..{axis + self.ndim - 1} of "
                f"{array.shape}) but this transform {what}s {expected}; pass an array on that grid (or the "
                "right axis= for leading channel axes)"
            )
        return int(axis)

    @staticmethod
    def _permute(array: np.ndarray, axis: int, perm: Sequence[int], flip: Sequence[bool]) -> np.ndarray:
        order = [*range(axis), *(axis + p for p in perm), *range(axis + len(perm), array.ndim)]
        out = np.transpose(array, order)
        flipped = tuple(axis + k for k, f in enumerate(flip) if f)
        return np.flip(out, flipped) if flipped else out

    def apply_array(self, array: np.ndarray, axis: int = 0) -> np.ndarray:
        """Reorient an array whose spatial axes start at ``axis`` (0 for ``(x, y, z, *extra)``, 1 for
        ``(C, x, y, z)``); other axes are kept in place.

        Returns:
            A view (transposed, possibly with negative strides: ``np.ascontiguousarray`` before
            ``torch.from_numpy``) with the spatial shape :attr:`target_shape`.
        """
        array = np.asarray(array)
        axis = self._check_array(array, axis, self.shape, "apply")
        return self._permute(array, axis, self.perm, self.flip)

    def invert_array(self, array: np.ndarray, axis: int = 0) -> np.ndarray:
        """Undo :meth:`apply_array`: an array on the output grid (e.g. a prediction in the canonical
        orientation) back onto the input grid; bit-exact. Returns a view, see :meth:`apply_array`."""
        array = np.asarray(array)
        axis = self._check_array(array, axis, self.target_shape, "invert")
        inv = self.inverse()
        return self._permute(array, axis, inv.perm, inv.flip)

    # -- geometry -------------------------------------------------------------------------------------
    def index_matrix(self) -> np.ndarray:
        """The ``(ndim + 1, ndim + 1)`` homogeneous map from output voxel indices to input indices."""
        out = np.zeros((self.ndim + 1, self.ndim + 1))
        out[self.ndim, self.ndim] = 1.0
        for k, (p, f) in enumerate(zip(self.perm, self.flip)):
            out[p, k] = -1.0 if f else 1.0
            out[p, self.ndim] = self.shape[p] - 1 if f else 0.0
        return out

    def apply_geometry(
        self, spacing: Sequence[float], origin: Sequence[float], direction: Any
    ) -> tuple[tuple[float, ...], tuple[float, ...], np.ndarray]:
        """The spacing, origin and direction (LPS) of the output grid, given the input's.

        Spacing and direction are permuted and negated (exact); the origin moves to the world
        position of the input voxel that becomes the output's first voxel.
        """
        spacing_a = np.asarray(spacing, dtype=np.float64).reshape(-1)
        origin_a = np.asarray(origin, dtype=np.float64).reshape(-1)
        direction_a = np.asarray(direction, dtype=np.float64)
        if spacing_a.size != self.ndim or origin_a.size != self.ndim or direction_a.shape != (self.ndim,) * 2:
            raise ValueError(
                f"the geometry (spacing {tuple(spacing_a)}, origin {tuple(origin_a)}, direction of shape "
                f"{direction_a.shape}) does not have the {self.ndim} spatial axes of this transform"
            )
        shift = np.zeros(self.ndim)
        for m in sorted(p for p, f in zip(self.perm, self.flip) if f):  # input axis order: reproducible
            shift += direction_a[:, m] * (spacing_a[m] * (self.shape[m] - 1))
        signs = np.where(np.asarray(self.flip), -1.0, 1.0)
        new_direction = direction_a[:, list(self.perm)] * signs[None, :]
        return (
            tuple(float(spacing_a[p]) for p in self.perm),
            tuple(float(v) for v in origin_a + shift),
            new_direction,
        )

    def invert_geometry(
        self, spacing: Sequence[float], origin: Sequence[float], direction: Any
    ) -> tuple[tuple[float, ...], tuple[float, ...], np.ndarray]:
        """The input grid's spacing, origin and direction, given the output's (see :meth:`apply_geometry`)."""
        return self.inverse().apply_geometry(spacing, origin, direction)

    # -- images ---------------------------------------------------------------------------------------
    def _image(self, image: Image, transform: OrientationTransform, inverting: bool) -> Image:
        if not isinstance(image, Image):
            raise TypeError(
                f"expected a delira.io.Image, got {type(image).__name__}; use apply_array/invert_array for arrays"
            )
        if image.ndim != transform.ndim or image.spatial_shape != transform.shape:
            raise ValueError(
                f"the image has spatial shape {image.spatial_shape} but the transform takes {transform.shape}; "
                "pass the image the transform was made for (or its reoriented version to invert)"
            )
        array = np.ascontiguousarray(transform.apply_array(image.array))
        spacing, origin, direction = transform.apply_geometry(image.spacing, image.origin, image.direction)  # type: ignore[arg-type]
        meta = dict(image.meta)
        if isinstance(meta.get("ras_affine"), np.ndarray) and meta["ras_affine"].shape == (4, 4):
            index = np.eye(4)
            m = transform.index_matrix()
            n = transform.ndim
            index[:n, :n], index[:n, 3] = m[:n, :n], m[:n, n]
            meta["ras_affine"] = meta["ras_affine"] @ index
        previous = meta.get("orientation")
        if previous is not None:
            previous = previous if isinstance(previous, OrientationTransform) else self.from_dict(previous)
            if previous.target_shape != transform.shape:
                previous = None  # a stale record of another grid: start afresh
        record = transform if previous is None else previous.then(transform)
        if inverting and record.is_identity:
            meta.pop("orientation", None)  # back in the layout the record started from
        else:
            meta["orientation"] = record
        return Image(array, spacing, origin, direction, meta)

    def apply(self, image: Image) -> Image:
        """Reorient ``image`` (spatial shape :attr:`shape`): a new :class:`~delira.io.Image` with a
        C-contiguous array and geometry such that every voxel keeps its world position.

        ``meta["orientation"]`` records the transform from the layout the image was read in (chained
        with an earlier record), so ``write_image(..., orientation="original")`` can undo it;
        ``meta["ras_affine"]`` (NIfTI) is updated; other header fields describe the file as stored.
        """
        return self._image(image, self, False)

    def invert(self, image: Image) -> Image:
        """Undo :meth:`apply` on an image on the output grid (e.g. a label map predicted on a
        reoriented image): the array and geometry of the input grid; the array bit-exactly, spacing
        and direction exactly, the origin up to floating-point rounding."""
        return self._image(image, self.inverse(), True)

    # -- records --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (lists, bools, strings), e.g. for a case's ``properties``."""
        return {
            "perm": list(self.perm),
            "flip": list(self.flip),
            "shape": list(self.shape),
            "source": self.source,
            "target": self.target,
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any] | OrientationTransform) -> OrientationTransform:
        """The transform of a :meth:`to_dict` record (a transform is returned as is)."""
        if isinstance(record, OrientationTransform):
            return record
        if not isinstance(record, Mapping):
            raise TypeError(
                f"an orientation record is a dict with 'perm', 'flip' and 'shape' (OrientationTransform.to_dict()), "
                f"got {type(record).__name__}"
            )
        missing = [k for k in ("perm", "flip", "shape") if k not in record]
        if missing:
            raise ValueError(
                f"the orientation record {dict(record)!r} lacks {missing}; pass what OrientationTransform.to_dict() "
                "returned"
            )
        return cls(
            tuple(record["perm"]),
            tuple(record["flip"]),
            tuple(record["shape"]),
            str(record.get("source") or ""),
            str(record.get("target") or ""),
        )


def orientation_transform(
    image_or_direction: Image | np.ndarray | Sequence[Sequence[float]],
    target: Code,
    shape: Sequence[int] | None = None,
) -> OrientationTransform:
    """The transform that reorients an image (or a grid given by its direction and shape) to ``target``.

    Args:
        image_or_direction: a :class:`~delira.io.Image`, or the ``(ndim, ndim)`` LPS direction
            matrix of a grid (then ``shape`` is required).
        target: the orientation code to reach: ``"RAS"``, ``"LPS"`` or any other (case-insensitive;
            for a 2D image a 3-letter code drops its ``S``/``I`` letter).
        shape: the grid's spatial shape (taken from the image when an image is given).

    Raises:
        ValueError: ``target`` is not an orientation code (the message says what is), the direction
            is not an invertible ``(ndim, ndim)`` matrix, or ``shape`` does not fit it.
    """
    direction = _direction_of(image_or_direction)
    ndim = direction.shape[0]
    if isinstance(image_or_direction, Image):
        shape = image_or_direction.spatial_shape
    elif shape is None:
        raise ValueError("shape is required with a direction matrix: pass the grid's spatial shape")
    shape = tuple(int(n) for n in shape)
    if len(shape) != ndim:
        raise ValueError(f"shape {shape} must have one size per axis of the {ndim}x{ndim} direction")
    wanted = _parse_code(target, ndim)
    have = _closest_axes(direction)
    axis_of = {world: axis for axis, (world, _) in enumerate(have)}
    perm = tuple(axis_of[world] for world, _ in wanted)
    flip = tuple(have[axis_of[world]][1] != sign for world, sign in wanted)
    return OrientationTransform(perm, flip, shape, _format_code(have), _format_code(wanted))


def reorient(image: Image, target: Code = "RAS") -> Image:
    """``image`` reoriented to the orientation code ``target`` (as MONAI's ``Orientation`` and
    TorchIO's ``ToCanonical``; ``"RAS"`` gives nibabel's ``as_closest_canonical``).

    The spatial axes are permuted and reversed (no interpolation) and spacing, origin and direction
    updated so that every voxel keeps its world position; extra axes (time, channels) stay last.
    The transform is recorded in ``meta["orientation"]`` (an :class:`OrientationTransform`, chained
    with an earlier record) so ``meta["orientation"].invert(result)`` or
    ``write_image(path, result, orientation="original")`` restores the original layout.

    Args:
        image: a :class:`~delira.io.Image` with 1 to 3 spatial axes.
        target: an orientation code (see :func:`orientation_transform`).

    Returns:
        A new :class:`~delira.io.Image` (C-contiguous array, same dtype).
    """
    if not isinstance(image, Image):
        raise TypeError(
            f"reorient expects a delira.io.Image, got {type(image).__name__}; wrap an array as "
            "Image(array, spacing, origin, direction)"
        )
    return orientation_transform(image, target).apply(image)
