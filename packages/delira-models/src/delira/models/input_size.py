"""Which spatial input sizes a network can take, and errors that name the nearest valid ones.

Framework-neutral: the PyTorch and the TensorFlow models check their inputs with the same rules, and
a data pipeline can ask for valid sizes (to crop or pad to) without importing either framework.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["InputSizeRule", "check_input_shape"]


@dataclass(frozen=True)
class InputSizeRule:
    """The spatial sizes a network accepts, on every spatial axis or per spatial axis.

    A size ``n`` is valid when ``n == exact`` (where ``exact`` is set), or else when
    ``n >= minimum`` and ``n % multiple == 0``. ``multiple`` and ``minimum`` are ints (the same on
    every axis) or tuples with one int per spatial axis (e.g. ``(16, 16, 4)`` for a UNet that pools
    its coarse last axis fewer times); the methods then take the spatial ``axis`` (0 for the first
    spatial axis), and without one they answer for sizes valid on every axis.

    Attributes:
        model: how errors name the network, e.g. ``"UNet with 4 stages"``.
        multiple: every valid size is a multiple of this (1: any size); an int or one per axis.
        minimum: the smallest valid size; an int or one per axis.
        exact: the only valid size, or None.
        hint: how to fix an invalid size, appended to errors.
    """

    model: str
    multiple: int | tuple[int, ...] = 1
    minimum: int | tuple[int, ...] = 1
    exact: int | None = None
    hint: str = "crop or pad the input to a valid size"

    @property
    def per_axis(self) -> bool:
        """Whether ``multiple`` or ``minimum`` differ per spatial axis (are tuples)."""
        return isinstance(self.multiple, tuple) or isinstance(self.minimum, tuple)

    @property
    def spatial_dims(self) -> int | None:
        """The number of spatial axes a per-axis rule is for; None for a rule for any number."""
        for value in (self.multiple, self.minimum):
            if isinstance(value, tuple):
                return len(value)
        return None

    def _on_axis(self, value: int | tuple[int, ...], axis: int | None, combine: str) -> int:
        if not isinstance(value, tuple):
            return value
        if axis is None:  # valid on every axis
            return math.lcm(*value) if combine == "lcm" else max(value)
        if not -len(value) <= axis < len(value):
            raise ValueError(
                f"{self.model}: its input rule is for {len(value)} spatial axes; got spatial axis {axis}; "
                f"pass axis 0 to {len(value) - 1} (0 is the first spatial axis, after N and C)"
            )
        return value[axis]

    def multiple_on(self, axis: int | None = None) -> int:
        """The multiple on spatial ``axis`` (an int); without an axis, the one valid on every axis
        (the least common multiple of the per-axis multiples)."""
        return self._on_axis(self.multiple, axis, "lcm")

    def minimum_on(self, axis: int | None = None) -> int:
        """The minimum on spatial ``axis`` (an int); without an axis, the largest minimum."""
        return self._on_axis(self.minimum, axis, "max")

    def multiples(self, spatial_dims: int) -> tuple[int, ...]:
        """The multiple of each of ``spatial_dims`` spatial axes, as a tuple of ints."""
        self._check_dims(spatial_dims)
        if isinstance(self.multiple, tuple):
            return self.multiple
        return (self.multiple,) * spatial_dims

    def _check_dims(self, spatial_dims: int) -> None:
        expected = self.spatial_dims
        if expected is not None and spatial_dims != expected:
            raise ValueError(
                f"{self.model} has an input rule for {expected} spatial axes (multiples "
                f"{self.multiple}); got {spatial_dims} spatial sizes; pass one size per spatial axis"
            )

    def is_valid(self, size: int, axis: int | None = None) -> bool:
        """Whether ``size`` (an int) is a valid size on spatial ``axis`` (on every axis if None)."""
        if self.exact is not None:
            return size == self.exact
        return size >= self.minimum_on(axis) and size % self.multiple_on(axis) == 0

    def nearest(self, size: int, axis: int | None = None) -> tuple[int, ...]:
        """The valid sizes on spatial ``axis`` (every axis if None) nearest to ``size``: the one
        below and the one above (one if there is none below, or if ``size`` is itself valid), as a
        tuple of ints in increasing order."""
        if self.exact is not None:
            return (self.exact,)
        if self.is_valid(size, axis):
            return (size,)
        multiple, minimum = self.multiple_on(axis), self.minimum_on(axis)
        first = -(-minimum // multiple) * multiple  # smallest valid size
        below = (size // multiple) * multiple
        above = below + multiple
        if below < first:
            return (max(first, above),)
        return (below, above)

    def nearest_shape(self, spatial_shape: Sequence[int], round_up: bool = True) -> tuple[int, ...]:
        """A valid spatial shape near ``spatial_shape``: per axis the nearest valid size at or
        above (``round_up``, e.g. for padding) or at or below it (for cropping; the smallest valid
        size where none is below), as a tuple of ints."""
        self._check_dims(len(spatial_shape))
        out = []
        for axis, size in enumerate(spatial_shape):
            options = self.nearest(int(size), axis if self.per_axis else None)
            out.append(options[-1] if round_up or len(options) == 1 else options[0])
        return tuple(out)

    def sizes(self, limit: int = 256, axis: int | None = None) -> list[int]:
        """Every valid size on spatial ``axis`` (on every axis if None) from the smallest up to
        ``limit`` (inclusive), as a list of ints."""
        if self.exact is not None:
            return [self.exact] if self.exact <= limit else []
        multiple, minimum = self.multiple_on(axis), self.minimum_on(axis)
        first = -(-minimum // multiple) * multiple
        return list(range(first, limit + 1, multiple))

    def describe(self) -> str:
        """The rule in words for docs and errors, e.g. ``"multiples of 8"`` or, per axis,
        ``"multiples of (16, 16, 4) per spatial axis"``."""
        if self.exact is not None:
            return f"exactly {self.exact}"
        if self.per_axis:
            text = f"multiples of {self.multiple} per spatial axis"
            if self.minimum != self.multiple:
                text += f", at least {self.minimum}"
            return text
        if self.multiple == 1:
            return f"any size >= {self.minimum}"
        if self.minimum <= self.multiple:  # type: ignore[operator]
            return f"multiples of {self.multiple}"
        return f"multiples of {self.multiple}, at least {self.minimum}"

    def _requirement(self) -> str:
        if self.exact is not None:
            return f"needs spatial size {self.exact} on every spatial axis"
        if self.per_axis:
            text = f"needs spatial sizes divisible by {self.multiple} (one multiple per spatial axis)"
            if self.minimum != self.multiple:
                text += f" and at least {self.minimum}"
            return text
        if self.multiple == 1:
            return f"needs spatial sizes of at least {self.minimum}"
        if self.minimum <= self.multiple:  # type: ignore[operator]
            return f"needs spatial sizes divisible by {self.multiple}"
        return f"needs spatial sizes divisible by {self.multiple} and at least {self.minimum}"

    def check(self, spatial_shape: Sequence[int | None], first_axis: int = 2) -> None:
        """Raise ValueError naming the first invalid size, its axis and the nearest valid sizes.

        Args:
            spatial_shape: the spatial sizes, e.g. ``x.shape[2:]`` of an ``(N, C, D, H, W)`` input;
                None (an unknown size while tracing) is skipped. A per-axis rule needs exactly
                one size per axis it is for.
            first_axis: the axis of the first spatial size in the full input, used in the message.
        """
        if self.per_axis:
            self._check_dims(len(spatial_shape))
        for offset, size in enumerate(spatial_shape):
            axis = offset if self.per_axis else None
            if size is None or self.is_valid(int(size), axis):
                continue
            nearest = self.nearest(int(size), axis)
            valid = " and ".join(str(n) for n in nearest)
            noun = "size is" if len(nearest) == 1 else "sizes are"
            where = ""
            if self.per_axis:
                where = f", which needs a multiple of {self.multiple_on(axis)}"
                if self.minimum_on(axis) > self.multiple_on(axis):
                    where += f" of at least {self.minimum_on(axis)}"
                noun = "size on that axis is" if len(nearest) == 1 else "sizes on that axis are"
            raise ValueError(
                f"{self.model} {self._requirement()}; got {int(size)} on axis {first_axis + offset}"
                f"{where} (input spatial shape {tuple(spatial_shape)}); nearest valid {noun} {valid}; "
                f"{self.hint}"
            )


def check_input_shape(
    shape: Sequence[int | None],
    *,
    model: str,
    spatial_dims: int,
    channels: int,
    rule: InputSizeRule,
) -> None:
    """Check a channels-first input shape ``(N, C, *spatial)`` against a network's expectations.

    Args:
        shape: the input's shape; None entries (unknown while tracing) are not checked.
        model: the network's name for the messages.
        spatial_dims: 2 for ``(N, C, H, W)`` inputs, 3 for ``(N, C, D, H, W)``.
        channels: the number of input channels C the network was built for.
        rule: the valid spatial sizes.

    Raises:
        ValueError: wrong number of dimensions, wrong channel count or an invalid spatial size.
    """
    layout = "(N, C, H, W)" if spatial_dims == 2 else "(N, C, D, H, W)"
    if len(shape) != spatial_dims + 2:
        raise ValueError(
            f"{model} (spatial_dims={spatial_dims}) needs channels-first input of shape {layout} "
            f"with {spatial_dims + 2} dimensions; got shape {tuple(shape)}; "
            f"add the missing batch/channel axes or build the model with spatial_dims={len(shape) - 2}"
        )
    if shape[1] is not None and int(shape[1]) != channels:
        raise ValueError(
            f"{model} was built for {channels} input channel(s) but got {int(shape[1])} "
            f"(input shape {tuple(shape)}, layout {layout}, channels first); "
            f"pass in_channels={int(shape[1])} when building it, or check the channel axis"
        )
    rule.check(shape[2:], first_axis=2)
