"""Dimension-generic Keras 3 building blocks with PyTorch's semantics, channels last inside.

Why not ``keras.layers.Conv3D(padding="same")``: TensorFlow pads "same" convolutions with stride 2
asymmetrically (more at the end) while PyTorch pads symmetrically, so the two would compute
different functions. These layers take PyTorch's arguments (``padding`` as an int, added on both
sides; a transposed conv's ``padding`` cropped from both sides), create their weights in the
constructor (from ``in_channels``, as PyTorch does), and initialise them with PyTorch's default
distributions. Tensors are channels last ``(N, *spatial, C)``: TensorFlow's CPU kernels do not all
support channels first; the networks transpose once at their input and output.

Kernel layouts (what ``delira.models.convert`` transposes): ``Conv.kernel`` is
``(*k, in_channels, out_channels)`` (PyTorch: ``(out, in, *k)``); ``ConvTranspose.kernel`` is
``(*k, out_channels, in_channels)`` (PyTorch: ``(in, out, *k)``).
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from delira.models._plans import Size, same_padding
from delira.models._plans import per_axis as _per_axis

__all__ = [
    "BATCH_NORM_EPS",
    "BATCH_NORM_MOMENTUM",
    "INSTANCE_NORM_EPS",
    "Conv",
    "ConvTranspose",
    "InstanceNorm",
    "Projection",
    "batch_norm",
    "dense",
    "max_pool",
    "norm",
    "same_padding",
    "to_channels_first",
    "to_channels_last",
    "upsample_linear",
]

BATCH_NORM_EPS = 1e-5
BATCH_NORM_MOMENTUM = 0.9  # Keras convention: moving = m * moving + (1 - m) * batch (PyTorch's 0.1)
INSTANCE_NORM_EPS = 1e-5


def _uniform(fan_in: int) -> keras.initializers.Initializer:
    """PyTorch's default for conv / linear weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def to_channels_last(x: Any) -> Any:
    """``(N, C, *S) -> (N, *S, C)``."""
    rank = len(x.shape)
    return ops.transpose(x, (0, *range(2, rank), 1))


def to_channels_first(x: Any) -> Any:
    """``(N, *S, C) -> (N, C, *S)``."""
    rank = len(x.shape)
    return ops.transpose(x, (0, rank - 1, *range(1, rank - 1)))


def _pad(x: Any, padding: Size, value: float = 0.0) -> Any:
    pads = _per_axis(padding, len(x.shape) - 2)
    if not any(pads):
        return x
    return ops.pad(x, [[0, 0]] + [[p, p] for p in pads] + [[0, 0]], constant_values=value)


class Conv(keras.layers.Layer):
    """Convolution ``(N, *S, in_channels) -> (N, *S', out_channels)``, ``S' = (S + 2p - k) // s + 1``,
    as ``torch.nn.Conv{2,3}d(in_channels, out_channels, kernel_size, stride, padding, bias)``;
    ``kernel_size``, ``stride`` and ``padding`` are ints (every axis) or one int per spatial axis.

    Args:
        kernel_initializer, bias_initializer: override PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Size,
        stride: Size = 1,
        padding: Size = 0,
        bias: bool = True,
        kernel_initializer: Any = None,
        bias_initializer: Any = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        kernel = _per_axis(kernel_size, spatial_dims)
        self.stride = _per_axis(stride, spatial_dims)
        self.padding = _per_axis(padding, spatial_dims)
        # stride 1 with padding (k - 1) / 2 is TensorFlow's "same" padding, symmetric: no pad op
        self._same = all(s == 1 and 2 * p == k - 1 for s, p, k in zip(self.stride, self.padding, kernel))
        fan_in = in_channels * math.prod(kernel)
        self.kernel = self.add_weight(
            shape=(*kernel, in_channels, out_channels),
            initializer=kernel_initializer or _uniform(fan_in),
            name="kernel",
        )
        self.bias = (
            self.add_weight(
                shape=(out_channels,), initializer=bias_initializer or _uniform(fan_in), name="bias"
            )
            if bias
            else None
        )
        self.built = True

    def call(self, x: Any) -> Any:
        """Convolve channels-last ``x``."""
        if self._same:
            y = ops.conv(x, self.kernel, strides=1, padding="same", data_format="channels_last")
        else:
            y = ops.conv(
                _pad(x, self.padding),
                self.kernel,
                strides=self.stride,
                padding="valid",
                data_format="channels_last",
            )
        return y if self.bias is None else y + self.bias


class ConvTranspose(keras.layers.Layer):
    """Transposed convolution ``(N, *S, in_channels) -> (N, *S', out_channels)``,
    ``S' = (S - 1) * s - 2p + k``, as ``torch.nn.ConvTranspose{2,3}d(in, out, kernel_size, stride, padding, bias)``;
    sizes are ints (every axis) or one int per spatial axis."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Size,
        stride: Size = 1,
        padding: Size = 0,
        bias: bool = True,
        kernel_initializer: Any = None,
        bias_initializer: Any = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        kernel = _per_axis(kernel_size, spatial_dims)
        self.stride = _per_axis(stride, spatial_dims)
        self.padding = _per_axis(padding, spatial_dims)
        fan_in = out_channels * math.prod(kernel)  # as PyTorch computes it for this layer
        self.kernel = self.add_weight(
            shape=(*kernel, out_channels, in_channels),
            initializer=kernel_initializer or _uniform(fan_in),
            name="kernel",
        )
        self.bias = (
            self.add_weight(
                shape=(out_channels,), initializer=bias_initializer or _uniform(fan_in), name="bias"
            )
            if bias
            else None
        )
        self.built = True

    def call(self, x: Any) -> Any:
        """Transposed-convolve channels-last ``x``."""
        y = ops.conv_transpose(
            x, self.kernel, strides=self.stride, padding="valid", data_format="channels_last"
        )
        if any(self.padding):
            y = y[(slice(None), *(slice(p, -p if p else None) for p in self.padding))]
        return y if self.bias is None else y + self.bias


class InstanceNorm(keras.layers.Layer):
    """Instance normalisation over the spatial axes of ``(N, *S, C)`` with a learned per-channel
    scale ``gamma`` and shift ``beta``; biased variance, ``eps`` 1e-5, no running statistics:
    ``torch.nn.InstanceNorm{2,3}d(C, affine=True)``."""

    def __init__(self, channels: int, epsilon: float = INSTANCE_NORM_EPS, **kwargs: Any):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")
        self.built = True

    def call(self, x: Any) -> Any:
        """Normalise channels-last ``x`` per sample and channel."""
        axes = tuple(range(1, len(x.shape) - 1))
        mean = ops.mean(x, axis=axes, keepdims=True)
        var = ops.var(x, axis=axes, keepdims=True)
        return (x - mean) * ops.rsqrt(var + self.epsilon) * self.gamma + self.beta


def batch_norm(
    spatial_dims: int, channels: int, gamma_initializer: Any = "ones"
) -> keras.layers.BatchNormalization:
    """A built ``keras.layers.BatchNormalization`` for ``(N, *S, channels)`` with PyTorch's
    defaults (eps 1e-5, momentum 0.1 in PyTorch's convention).

    Eval-mode outputs equal PyTorch's for equal weights and statistics; in training, the moving
    variance is updated with the biased batch variance (PyTorch uses the unbiased one).
    """
    layer = keras.layers.BatchNormalization(
        axis=-1, momentum=BATCH_NORM_MOMENTUM, epsilon=BATCH_NORM_EPS, gamma_initializer=gamma_initializer
    )
    layer.build((None,) * (spatial_dims + 1) + (channels,))
    return layer


def norm(kind: str, spatial_dims: int, channels: int) -> keras.layers.Layer:
    """``"batch"`` (``batch_norm``) or ``"instance"`` (``InstanceNorm``) normalisation."""
    if kind == "batch":
        return batch_norm(spatial_dims, channels)
    if kind == "instance":
        return InstanceNorm(channels)
    raise ValueError(f"norm must be 'batch' or 'instance'; got {kind!r}")


def dense(in_features: int, out_features: int) -> keras.layers.Dense:
    """A built ``keras.layers.Dense`` ``(N, in_features) -> (N, out_features)`` initialised as
    ``torch.nn.Linear``; its kernel is ``(in, out)`` (PyTorch: ``(out, in)``)."""
    layer = keras.layers.Dense(
        out_features, kernel_initializer=_uniform(in_features), bias_initializer=_uniform(in_features)
    )
    layer.build((None, in_features))
    return layer


def max_pool(x: Any, kernel_size: Size, stride: Size, padding: Size = 0) -> Any:
    """Max pooling of channels-last ``(N, *S, C)`` ``x``, padding with -inf as
    ``torch.nn.MaxPool{2,3}d``; sizes are ints (every axis) or one int per spatial axis:
    ``-> (N, *((S + 2 * padding - kernel_size) // stride + 1), C)``."""
    dims = len(x.shape) - 2
    x = _pad(x, padding, value=float("-inf"))
    return ops.max_pool(
        x,
        _per_axis(kernel_size, dims),
        strides=_per_axis(stride, dims),
        padding="valid",
        data_format="channels_last",
    )


def _upsample_axis(x: Any, axis: int, factor: int) -> Any:
    def part(start: int | None, stop: int | None) -> Any:
        index = [slice(None)] * len(x.shape)
        index[axis] = slice(start, stop)
        return x[tuple(index)]

    # neighbours with clamped edges; works for sizes unknown while tracing (and for size 1)
    previous = ops.concatenate([part(None, 1), part(None, -1)], axis=axis)
    following = ops.concatenate([part(1, None), part(-1, None)], axis=axis)
    phases = []
    for r in range(factor):
        # output factor * i + r samples the input at i + d (align_corners=False)
        d = (r + 0.5) / factor - 0.5
        if d < 0:
            phases.append((1.0 + d) * x - d * previous)
        elif d > 0:
            phases.append((1.0 - d) * x + d * following)
        else:
            phases.append(x)
    stacked = ops.stack(phases, axis=axis + 1)  # (..., n, factor, ...)
    shape = list(ops.shape(x))
    shape[axis] = shape[axis] * factor
    return ops.reshape(stacked, shape)


def upsample_linear(x: Any, scale_factor: Size = 2) -> Any:
    """Bi/trilinear upsampling of channels-last ``(N, *S, C) -> (N, *(S * scale_factor), C)`` by
    integer factors (an int for every axis, or one per spatial axis; 1 leaves an axis unchanged)
    with ``align_corners=False``, as ``torch.nn.functional.interpolate``: along an axis with
    factor ``f``, output ``f * i + r`` is the linear interpolation of the input at
    ``i + (r + 0.5) / f - 0.5``, edges clamped (for ``f = 2``: ``0.75 x[i] + 0.25 x[i - 1]`` and
    ``0.75 x[i] + 0.25 x[i + 1]``)."""
    factors = _per_axis(scale_factor, len(x.shape) - 2)
    for axis, factor in enumerate(factors, start=1):
        if factor < 1:
            raise ValueError(f"upsample_linear needs integer factors >= 1; got {factors}")
        if factor > 1:
            x = _upsample_axis(x, axis, factor)
    return x


class Projection(keras.layers.Layer):
    """The shortcut of a residual block whose shape changes: 1x1 conv (no bias, ``stride``) + norm.

    ``(N, *S, in_channels) -> (N, *ceil(S / stride), out_channels)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        stride: int,
        norm_kind: str,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.conv = Conv(spatial_dims, in_channels, out_channels, 1, stride=stride, bias=False)
        self.norm = norm(norm_kind, spatial_dims, out_channels)

    def call(self, x: Any, training: bool | None = None) -> Any:
        """Project channels-last ``x``."""
        return self.norm(self.conv(x), training=training)
