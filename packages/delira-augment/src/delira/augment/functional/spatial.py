"""Spatial operations: affine resampling (scipy conventions) and the fused spatial transform.

The fused transform maps every output voxel ``o`` of the patch to an input coordinate

    x = M (F (o - h) + e(o)) + c + t

with ``h = (patch - 1) / 2`` the patch centre, ``F`` the mirroring (diagonal of +-1), ``e`` the
elastic displacement in output voxels, ``M = diag(scale) R shear`` (rotation ``R``), ``c`` the crop
centre in the input and ``t`` a translation; image and segmentation are sampled there once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from delira.augment import _arrays, _cuda, _engine
from delira.augment import _validate as v
from delira.augment._program import Program
from delira.augment._spec import ResampleSpec
from delira.augment.functional.elastic import ElasticField


def rotation_matrix(angles: Any, ndim: int) -> np.ndarray:
    """Rotation matrix for ``angles`` in radians.

    2D: one angle. 3D: three angles; angle ``k`` rotates the plane of the two other axes, and the
    rotations apply in the order axis 0, axis 1, axis 2 (``R = R2 @ R1 @ R0``).
    """
    angles = np.atleast_1d(np.asarray(angles, dtype=np.float64))
    if angles.shape == (1,) and ndim == 3:
        angles = np.repeat(angles, 3)  # one number: the same angle about every axis
    if ndim == 2:
        c, s = np.cos(angles[0]), np.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    if angles.shape != (3,):
        raise ValueError(f"3D rotation needs 3 angles, got {angles.shape[0]}")
    mats = []
    for axis, a in enumerate(angles):
        c, s = np.cos(a), np.sin(a)
        r = np.eye(3)
        i, j = [k for k in range(3) if k != axis]
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        mats.append(r)
    return mats[2] @ mats[1] @ mats[0]


def transform_matrix(
    input_shape: tuple[int, ...],
    patch_shape: tuple[int, ...],
    *,
    rotation: Any = 0.0,
    scale: Any = 1.0,
    shear: Any = None,
    translation: Any = 0.0,
    mirror: Any = None,
    center: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The affine part of the fused transform for one sample.

    Args:
        input_shape: spatial shape of the input, ``(D, H, W)`` or ``(H, W)``.
        patch_shape: spatial shape of the output patch.
        rotation: radians, one angle (2D) or three (3D), see :func:`rotation_matrix`.
        scale: a factor or one per axis; > 1 samples a larger input region (zooms out).
        shear: ``(ndim, ndim)`` off-diagonal shear factors or None.
        translation: input voxels, scalar or per axis.
        mirror: per-axis booleans: reverse the output along that axis.
        center: input coordinate of the patch centre; default the centre of the input.

    Returns:
        ``(affine, linear)``: the ``(ndim, ndim + 1)`` map from output index to input coordinate
        (before elastic), and ``M`` ``(ndim, ndim)``, which maps elastic displacements to input voxels.
    """
    nd = len(patch_shape)
    scale = v.finite_array(scale, "scale", (nd,))
    if np.any(scale <= 0):
        raise ValueError(f"scale must be > 0, got {scale}")
    linear = np.diag(scale) @ rotation_matrix(v.finite_array(rotation, "rotation"), nd)
    if shear is not None:
        sh = v.finite_array(shear, "shear", (nd, nd)).copy()
        np.fill_diagonal(sh, 0.0)
        linear = linear @ (np.eye(nd) + sh)
    flips = (
        np.ones(nd)
        if mirror is None
        else np.where(np.broadcast_to(np.asarray(mirror, bool), (nd,)), -1.0, 1.0)
    )
    a = linear * flips[None, :]
    half = (np.asarray(patch_shape, dtype=np.float64) - 1.0) / 2.0
    c = (
        (np.asarray(input_shape, dtype=np.float64) - 1.0) / 2.0
        if center is None
        else v.finite_array(center, "center", (nd,))
    )
    b = c + v.finite_array(translation, "translation", (nd,)) - a @ half
    return np.concatenate([a, b[:, None]], axis=1), linear


def _as_batch(x: Any, name: str, spatial_ndim: int | None, kind: str) -> tuple[np.ndarray, Any]:
    """A host (numpy) view or, for CUDA arrays, a device description, checked; and the output wrapper."""
    if _arrays.is_cuda_array(x):
        host = _arrays.CudaArray.from_array(x, name)
        v.batch_array(host, name, spatial_ndim)
        (v.image_dtype if kind == "image" else v.label_dtype)(host, name)
        return host, _arrays.cuda_wrapper(x)  # torch/cupy: allocated in the framework; tf/jax: exported
    host, wrap = _arrays.to_host(x, name)
    v.batch_array(host, name, spatial_ndim)
    (v.image_dtype if kind == "image" else v.label_dtype)(host, name)
    return host, wrap


def spatial_transform(
    data: Any = None,
    seg: Any = None,
    *,
    affine: np.ndarray,
    patch_size: tuple[int, ...],
    linear: np.ndarray | None = None,
    elastic: ElasticField | None = None,
    order_data: int = 1,
    order_seg: int = 0,
    mode_data: str = "constant",
    cval_data: float = 0.0,
    mode_seg: str = "constant",
    cval_seg: float = 0.0,
    program: Program | None = None,
    backend: str = "auto",
) -> tuple[Any, Any]:
    """Resample ``data`` and ``seg`` onto a patch in one pass, with explicit per-sample parameters.

    Args:
        data: image batch ``(N, C, *spatial)`` float32/float64, or None.
        seg: segmentation batch ``(N, Cs, *spatial)`` uint8/int16/int32/int64 (same spatial shape), or None.
        affine: ``(N, ndim, ndim + 1)`` maps from output index to input coordinate
            (see :func:`transform_matrix`).
        patch_size: output spatial shape.
        linear: ``(N, ndim, ndim)`` linear parts that map elastic displacements to input voxels
            (required with ``elastic``).
        elastic: per-sample elastic control points in output voxels, or None.
        order_data: 0 nearest, 1 linear, 3 cubic B-spline.
        order_seg: 0 nearest, 1 per-label linear interpolation followed by argmax.
        mode_data, mode_seg: border modes ('constant', 'nearest', 'reflect', 'mirror').
        cval_data, cval_seg: values outside the input in constant mode.
        program: intensity operations applied to data in the same pass.
        backend: 'auto', 'cpu', 'cuda' or 'batchgenerators'.

    Inputs are read through their strides (transposed, sliced and negative-stride views need no copy);
    torch tensors are read detached. CUDA inputs (data and seg on one device) run on the CUDA executor:
    torch CUDA tensors and cupy arrays on the caller's current stream, tensorflow GPU tensors and jax GPU
    arrays through DLPack on delira's stream of the device. NaN in ``data`` propagates to every
    output voxel whose interpolation stencil touches it, as in ``scipy.ndimage`` (order 3: through the
    spline prefilter).
    Labels are copied exactly (int64 included). float16 data, bool labels and empty arrays raise.

    Returns:
        ``(data_out, seg_out)`` of shapes ``(N, C, *patch_size)`` and ``(N, Cs, *patch_size)``, in the
        inputs' types; None where the input was None.
    """
    if data is None and seg is None:
        raise ValueError("spatial_transform: give data, seg or both")
    nd = len(patch_size)
    patch = v.int_tuple(patch_size, nd, "patch_size")
    d_host = s_host = None
    wrap_d = wrap_s = None
    if data is not None:
        d_host, wrap_d = _as_batch(data, "data", nd, "image")
    if seg is not None:
        s_host, wrap_s = _as_batch(seg, "seg", nd, "label")
    if d_host is not None and s_host is not None:
        d_cuda, s_cuda = isinstance(d_host, _arrays.CudaArray), isinstance(s_host, _arrays.CudaArray)
        if d_cuda != s_cuda:
            on_gpu, on_host = ("data", "seg") if d_cuda else ("seg", "data")
            raise ValueError(
                f"{on_gpu} is a CUDA array but {on_host} is a host array; pass both on the GPU "
                f"({on_host}.cuda() / cupy.asarray({on_host})) or both on the CPU"
            )
        if d_cuda:
            _arrays.check_same_device({"data": d_host, "seg": s_host})
        if d_host.shape[0] != s_host.shape[0] or d_host.shape[2:] != s_host.shape[2:]:
            raise ValueError(
                f"seg has shape {s_host.shape} but data has shape {d_host.shape}; pass seg with the same batch size "
                "and spatial shape, or leave it out"
            )
    n = (d_host if d_host is not None else s_host).shape[0]
    affine = v.finite_array(affine, "affine")
    if affine.shape != (n, nd, nd + 1):
        raise ValueError(f"affine has shape {affine.shape}; expected (N, ndim, ndim + 1) = {(n, nd, nd + 1)}")
    field = None
    if elastic is not None:
        if linear is None:
            raise ValueError("elastic needs linear, the (N, ndim, ndim) linear parts of the transform")
        values = np.einsum(
            "nij,nj...->ni...", np.asarray(linear, np.float64), elastic.values.astype(np.float64)
        )
        field = ElasticField(values.astype(np.float32), elastic.origin, elastic.spacing)
    spec = ResampleSpec.from_field(
        patch,
        affine,
        field,
        order_data=order_data,
        mode_data=mode_data,
        cval_data=cval_data,
        order_seg=order_seg,
        mode_seg=mode_seg,
        cval_seg=cval_seg,
        program=program,
    )
    _cuda.check_percentile_input(d_host, program)
    out_d, out_s = _engine.resample(d_host, s_host, spec, backend)
    return (None if out_d is None else wrap_d(out_d)), (None if out_s is None else wrap_s(out_s))


def affine_resample(
    x: Any,
    matrix: Any,
    output_shape: tuple[int, ...] | None = None,
    order: int = 1,
    mode: str = "constant",
    cval: float = 0.0,
    *,
    backend: str = "auto",
) -> Any:
    """Resample the spatial axes of ``x`` with an affine map, as ``scipy.ndimage.affine_transform``.

    Args:
        x: ``(N, C, *spatial)``, ``(C, *spatial)`` or ``(*spatial)`` with 2 or 3 spatial axes; float32 or
            float64 images, or uint8/int16/int32/int64 labels (order 0, or order 1 = per-label linear
            interpolation + argmax).
        matrix: homogeneous ``(ndim + 1, ndim + 1)`` (or ``(ndim, ndim + 1)``) matrix mapping output voxel
            indices to input voxel indices; ``ndim`` is the number of spatial axes.
        output_shape: spatial shape of the output; default the input's.
        order: 0 nearest, 1 linear, 3 cubic B-spline (with the spline prefilter).
        mode: 'constant', 'nearest', 'reflect' or 'mirror', with scipy's semantics.
        cval: value outside the input in constant mode.

    Returns:
        An array of shape ``x.shape[:-ndim] + output_shape`` with x's dtype and type; empty when ``x`` or
        ``output_shape`` has a 0 axis.

    Raises:
        TypeError: float16, bool or another unsupported dtype (convert with ``x.astype('float32')``).
        ValueError: a bad matrix, rank, order or mode. NaN in ``x`` is not an error: it propagates as
            in ``scipy.ndimage.affine_transform``.
    """
    m = v.finite_array(matrix, "matrix")
    if m.ndim != 2 or m.shape[0] not in (m.shape[1], m.shape[1] - 1) or m.shape[1] not in (3, 4):
        raise ValueError(
            f"matrix has shape {m.shape}; expected (ndim + 1, ndim + 1) or (ndim, ndim + 1) with ndim 2 or 3"
        )
    nd = m.shape[1] - 1
    if m.shape[0] == nd + 1 and not np.allclose(m[nd], np.eye(nd + 1)[nd]):
        raise ValueError(
            f"the last row of matrix must be {np.eye(nd + 1)[nd].tolist()}, got {m[nd].tolist()}"
        )
    if _arrays.is_cuda_array(x):
        host, wrap = x, (lambda out: out)  # spatial_transform returns x's framework already
    else:
        host, wrap = _arrays.to_host(x)
    shape = tuple(int(s) for s in host.shape)
    if len(shape) < nd or len(shape) > nd + 2:
        raise ValueError(
            f"x has shape {shape}; a {nd + 1}x{nd + 1} matrix needs (N, C, *{nd} spatial), (C, *spatial) or (*spatial)"
        )
    spatial = shape[len(shape) - nd :]
    out_spatial = (
        spatial if output_shape is None else v.int_tuple(output_shape, nd, "output_shape", minimum=0)
    )
    lead = shape[: len(shape) - nd]
    dtype = _arrays.np_dtype(host)
    is_label = dtype.kind in "iu"
    if is_label and order == 3:
        raise ValueError(
            "order=3 is not defined for label arrays; use order=0 (nearest) or 1 (per-label linear)"
        )
    if order not in (0, 1, 3):
        raise ValueError(f"order={order!r}; use 0, 1 or 3")
    v.mode_code(mode, "mode")
    v.finite(cval, "cval")
    n_batch = int(np.prod(lead)) if lead else 1
    if n_batch == 0 or 0 in spatial or 0 in out_spatial:
        if _arrays.is_cuda_array(host):
            return _arrays.cuda_wrapper(host)(_arrays.cuda_empty_like(host, lead + tuple(out_spatial)))
        return wrap(np.empty(lead + tuple(out_spatial), dtype=dtype))
    batch = _arrays.reshape(host, (n_batch, 1, *spatial))
    affine = np.broadcast_to(m[:nd].astype(np.float64), (n_batch, nd, nd + 1))
    kwargs = {"affine": affine, "patch_size": out_spatial, "backend": backend}
    if is_label:
        _, out = spatial_transform(None, batch, order_seg=order, mode_seg=mode, cval_seg=cval, **kwargs)
    else:
        out, _ = spatial_transform(batch, None, order_data=order, mode_data=mode, cval_data=cval, **kwargs)
    return wrap(_arrays.reshape(out, lead + tuple(out_spatial)))


def mirror(x: Any, axes: Any) -> Any:
    """Reverse spatial axes of ``x`` ``(N, C, *spatial)``; ``axes`` count spatial axes from 0."""
    host_ndim = len(getattr(x, "shape", ()))
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    from delira.augment.functional.flip import flip

    return flip(x, tuple(a + 2 if a >= 0 else host_ndim + a for a in axes))


def crop(x: Any, center: Any, size: tuple[int, ...], pad_value: float = 0.0) -> Any:
    """Crop patches of ``size`` around per-sample integer centres, padding with ``pad_value`` outside.

    Args:
        x: ``(N, C, *spatial)`` array. CUDA arrays (torch, cupy, tensorflow GPU, jax GPU; uint8, int16,
            int32, int64, float32 or float64, any strides) are cropped on the GPU by one kernel and come
            back on their device, in their framework.
        center: ``(N, ndim)`` voxel indices of the patch centres (the voxel at ``size // 2``).
        size: patch spatial shape.
        pad_value: value of the voxels outside the input, converted to x's dtype as numpy converts it.

    Returns:
        ``(N, C, *size)`` array of x's dtype and type.
    """
    if _arrays.is_cuda_array(x):
        return _crop_cuda(x, center, size, pad_value)
    host, wrap = _arrays.to_host(x)
    nd = host.ndim - 2
    size = v.int_tuple(size, nd, "size")
    starts = crop_starts(center, size, host.shape[0])
    out = np.full(host.shape[:2] + size, pad_value, dtype=host.dtype)
    for i in range(host.shape[0]):
        src, dst = [], []
        for d in range(nd):
            start = int(starts[i, d])
            lo, hi = max(start, 0), min(start + size[d], host.shape[2 + d])
            if hi <= lo:
                break
            src.append(slice(lo, hi))
            dst.append(slice(lo - start, hi - start))
        else:
            out[(i, slice(None), *dst)] = host[(i, slice(None), *src)]
    return wrap(out)


def crop_starts(center: Any, size: tuple[int, ...], n: int) -> np.ndarray:
    """The first input index of every patch, ``center - size // 2`` ``(N, ndim)`` (int64)."""
    center = np.asarray(center)
    nd = len(size)
    if center.shape != (n, nd):
        raise ValueError(f"center has shape {center.shape}; expected (N, ndim) = {(n, nd)}")
    return center.astype(np.int64) - np.asarray(size, dtype=np.int64)[None] // 2


def _crop_cuda(x: Any, center: Any, size: Any, pad_value: float) -> Any:
    """crop on the GPU: one kernel reads the strided input in place and writes the padded patches."""
    from delira.augment._cuda import require_cuda

    a = _arrays.CudaArray.from_array(x, "x")
    if not 3 <= a.ndim <= 5:
        raise ValueError(f"x has shape {a.shape}; expected (N, C, *spatial) with 1 to 3 spatial axes")
    dtype = _arrays.check_dtype(a.dtype, "x")
    nd = a.ndim - 2
    size = v.int_tuple(size, nd, "size")
    starts = crop_starts(center, size, a.shape[0])
    pad = np.full((), pad_value, dtype=a.dtype).tobytes()  # as the CPU path converts it (np.full)
    pad_bits = int.from_bytes(pad.ljust(8, b"\0")[:8], "little") if np.little_endian else None
    if pad_bits is None:  # pragma: no cover - big-endian hosts have no CUDA
        raise RuntimeError("crop on CUDA arrays needs a little-endian host")
    out_shape = (*a.shape[:2], *size)
    module = require_cuda("crop")
    out = _arrays.cuda_empty_like(a.obj, out_shape)
    stream, device = _arrays.cuda_stream_and_device(a.obj)
    with device:
        module.crop_cuda(
            a.ptr,
            _arrays.CudaArray.from_array(out, "out").ptr,
            dtype,
            list(a.shape),
            list(a.strides),
            list(out_shape),
            starts,
            pad_bits,
            stream,
        )
    return _arrays.cuda_wrapper(x)(out)
