"""How much memory a UNet needs to train, counted from its config: no framework, no allocation.

A planner that fits patch size and batch size into a GPU-memory budget needs the cost of a
candidate without building the network. The count here walks the layer plan both
``delira.models.torch`` and ``delira.models.tf`` build their UNet from (``delira.models._plans``)
layer by layer:

- **activations**: the elements of every feature map the forward pass produces, which autograd
  keeps (or could keep) for the backward pass: the output of every convolution (transposed ones
  included), normalisation, ReLU, max-pooling, linear upsampling, residual sum and skip
  concatenation, and the logits of every head. The input batch itself is not counted.
- **parameters**: every trainable weight (conv kernels and biases, norm scales and shifts; batch
  norm's running statistics are buffers, not parameters, and are left out).

``estimate_unet_memory_bytes`` turns both into bytes: activations times ``bytes_per_element``, plus
parameters times ``parameter_copies`` (weights, gradients and Adam's two moments: 4) times
``bytes_per_element``. It leaves out what depends on the framework and the device: convolution
workspaces, the allocator's rounding and caching, the CUDA context. Leave a margin for those
(e.g. plan with 80-90 % of the memory).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from delira.models._plans import ConvSpec, UNetBlockPlan, UNetPlan, unet_plan
from delira.models.configs import UNetConfig

__all__ = [
    "ACTIVATION_KINDS",
    "estimate_unet_memory_bytes",
    "unet_activation_breakdown",
    "unet_activation_elements",
    "unet_parameter_count",
]

# the keys of unet_activation_breakdown, and what each counts
ACTIVATION_KINDS: dict[str, str] = {
    "conv": "outputs of the block convolutions, residual projections and upsampling convolutions",
    "norm": "outputs of every normalisation (blocks and residual projections)",
    "activation": "outputs of every ReLU",
    "pool": "outputs of the max-poolings between encoder stages",
    "interpolate": "outputs of the linear upsampling (upsample='interpolate' only)",
    "concat": "the skip concatenations [skip, upsampled] of the decoder",
    "residual": "the residual sums before the last ReLU of a residual block",
    "logits": "outputs of the 1x1 heads (main and deep-supervision logits)",
}


def _config(config: UNetConfig | Mapping[str, Any]) -> UNetConfig:
    if isinstance(config, UNetConfig):
        return config
    if isinstance(config, Mapping):
        return UNetConfig(**config)
    raise TypeError(
        f"expected a UNetConfig or a dict of its arguments (e.g. model.config or "
        f"{{'spatial_dims': 3, 'num_stages': 5}}); got {type(config).__name__}"
    )


def _patch(cfg: UNetConfig, patch_size: Sequence[int] | int) -> tuple[int, ...]:
    if _is_int(patch_size):
        patch_size = (patch_size,) * cfg.spatial_dims  # type: ignore[assignment]
    if isinstance(patch_size, (str, bytes)) or not isinstance(patch_size, Sequence):
        patch_size = tuple(patch_size) if hasattr(patch_size, "__iter__") else (patch_size,)  # e.g. numpy
    if len(patch_size) != cfg.spatial_dims or not all(_is_int(p) and p > 0 for p in patch_size):
        raise ValueError(
            f"patch_size must be {cfg.spatial_dims} positive ints (one per spatial axis, spatial_dims="
            f"{cfg.spatial_dims}); got {patch_size!r}"
        )
    patch = tuple(int(p) for p in patch_size)
    try:
        cfg.input_rule().check(patch, first_axis=0)
    except ValueError as exc:
        raise ValueError(f"patch_size {patch} does not fit the UNet: {exc}") from None
    return patch


def _is_int(value: Any) -> bool:
    """An int (numpy integers included), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _batch(batch_size: int) -> int:
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    return int(batch_size)


def unet_activation_breakdown(
    config: UNetConfig | Mapping[str, Any], patch_size: Sequence[int] | int, batch_size: int = 1
) -> dict[str, int]:
    """The activation elements of one forward pass, by kind of layer (see ``ACTIVATION_KINDS``).

    Args:
        config: a ``UNetConfig`` (e.g. ``model.config``) or a dict of its arguments.
        patch_size: the spatial input size, one int per spatial axis (or one int for all), valid
            for the network (``config.input_rule()``).
        batch_size: samples per batch.

    Returns:
        ``{kind: number of elements}`` with every key of ``ACTIVATION_KINDS`` (ints; 0 where a kind
        does not occur).

    Raises:
        ValueError: a patch size the network cannot take, or a non-positive batch size.
    """
    cfg = _config(config)
    patch = _patch(cfg, patch_size)
    batch = _batch(batch_size)
    plan = unet_plan(cfg)
    # voxels per sample at each stage
    voxels = [math.prod(p // c for p, c in zip(patch, cum)) for cum in cfg.cumulative_strides]
    counts = dict.fromkeys(ACTIVATION_KINDS, 0)
    residual = cfg.block == "residual"

    def block(b: UNetBlockPlan, n: int) -> None:
        counts["conv"] += 2 * b.out_channels * n
        counts["norm"] += 2 * b.out_channels * n
        counts["activation"] += 2 * b.out_channels * n
        if residual:
            counts["residual"] += b.out_channels * n
            if b.projects:  # 1x1 projection: conv + norm
                counts["conv"] += b.out_channels * n
                counts["norm"] += b.out_channels * n

    for stage, b in enumerate(plan.encoder):
        if plan.pools_into(stage):
            counts["pool"] += b.in_channels * voxels[stage]
        block(b, voxels[stage])
    for level, up, b in zip(plan.levels, plan.up, plan.decoder):  # decoder, deepest first
        if up.interpolates:
            counts["interpolate"] += up.in_channels * voxels[level]
        counts["conv"] += up.out_channels * voxels[level]  # transposed conv, or the 1x1 conv after it
        counts["concat"] += b.in_channels * voxels[level]
        block(b, voxels[level])
    counts["logits"] += sum(head.out_channels * voxels[k] for k, head in _heads(plan))
    return {kind: batch * n for kind, n in counts.items()}


def _heads(plan: UNetPlan) -> list[tuple[int, ConvSpec]]:
    """``(decoder level, 1x1 conv)`` of the main head and of every deep-supervision head."""
    return [(0, plan.head), *zip(plan.aux_levels, plan.aux_heads)]


def unet_activation_elements(
    config: UNetConfig | Mapping[str, Any], patch_size: Sequence[int] | int, batch_size: int = 1
) -> int:
    """The number of activation elements a training forward pass of the UNet stores: the sum of
    ``unet_activation_breakdown`` (the output of every conv, norm, ReLU, pooling, upsampling,
    residual sum and skip concatenation of encoder and decoder, and the logits).

    Args:
        config: a ``UNetConfig`` (e.g. ``model.config``) or a dict of its arguments.
        patch_size: the spatial input size, one int per spatial axis (or one int for all).
        batch_size: samples per batch.

    Returns:
        The element count (an int); times 4 for bytes in float32.

    Example: ``unet_activation_elements(UNetConfig(spatial_dims=3), (64, 64, 64), 2)``.
    """
    return sum(unet_activation_breakdown(config, patch_size, batch_size).values())


def unet_parameter_count(config: UNetConfig | Mapping[str, Any]) -> int:
    """The number of trainable parameters of the UNet built with ``config`` (an int), equal to
    ``model.num_parameters()`` in both frameworks, without building it."""
    cfg = _config(config)
    plan = unet_plan(cfg)
    dims = cfg.spatial_dims

    def block(b: UNetBlockPlan) -> int:
        n = sum(conv.parameters(dims) + 2 * conv.out_channels for conv in b.convs)  # conv + norm
        if cfg.block == "residual" and b.projects:
            n += b.in_channels * b.out_channels + 2 * b.out_channels  # 1x1 projection + norm
        return n

    total = sum(block(b) for b in plan.encoder)
    total += sum(up.conv.parameters(dims) + block(b) for up, b in zip(plan.up, plan.decoder))
    total += sum(head.parameters(dims) for _, head in _heads(plan))
    return total


def estimate_unet_memory_bytes(
    config: UNetConfig | Mapping[str, Any],
    patch_size: Sequence[int] | int,
    batch_size: int,
    bytes_per_element: int = 4,
    parameter_copies: int = 4,
) -> int:
    """Bytes a training step of the UNet needs for activations and parameters.

    ``(unet_activation_elements(...) + unet_parameter_count(config) * parameter_copies) *
    bytes_per_element``; see the module docstring for what is left out.

    Args:
        config: a ``UNetConfig`` (e.g. ``model.config``) or a dict of its arguments.
        patch_size: the spatial input size, one int per spatial axis (or one int for all).
        batch_size: samples per batch.
        bytes_per_element: 4 for float32, 2 for float16 / bfloat16.
        parameter_copies: copies of every parameter held: weights, gradients and the optimizer's
            state (4 for Adam: two moments; 3 for SGD with momentum; 2 for plain SGD).

    Returns:
        The estimate in bytes (an int).
    """
    for name, value in (("bytes_per_element", bytes_per_element), ("parameter_copies", parameter_copies)):
        if not _is_int(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative int; got {value!r}")
    activations = unet_activation_elements(config, patch_size, batch_size)
    parameters = unet_parameter_count(config) * parameter_copies
    return (activations + parameters) * bytes_per_element
