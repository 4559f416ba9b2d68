"""Which spatial input sizes a network can take, and errors that name the nearest valid ones.

Framework-neutral: the PyTorch and the TensorFlow models check their inputs with the same rules, and
a data pipeline can ask for valid sizes (to crop or pad to) without importing either framework.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["InputSizeRule", "check_input_shape"]


@dataclass(frozen=True)
class InputSizeRule:
    """The spatial sizes a network accepts, on every spatial axis.

    A size ``n`` is valid when ``n == exact`` (where ``exact`` is set), or else when
    ``n >= minimum`` and ``n % multiple == 0``.

    Attributes:
        model: how errors name the network, e.g. ``"UNet with 4 stages"``.
        multiple: every valid size is a multiple of this (1: any size).
        minimum: the smallest valid size.
        exact: the only valid size, or None.
        hint: how to fix an invalid size, appended to errors.
    """

    model: str
    multiple: int = 1
    minimum: int = 1
    exact: int | None = None
    hint: str = "crop or pad the input to a valid size"

    def is_valid(self, size: int) -> bool:
        """Whether ``size`` (an int) is a valid spatial size."""
        if self.exact is not None:
            return size == self.exact
        return size >= self.minimum and size % self.multiple == 0

    def nearest(self, size: int) -> tuple[int, ...]:
        """The valid sizes nearest to ``size``: the one below and the one above (one if there is
        none below, or if ``size`` is itself valid), as a tuple of ints in increasing order."""
        if self.exact is not None:
            return (self.exact,)
        if self.is_valid(size):
            return (size,)
        first = -(-self.minimum // self.multiple) * self.multiple  # smallest valid size
        below = (size // self.multiple) * self.multiple
        above = below + self.multiple
        if below < first:
            return (max(first, above),)
        return (below, above)

    def sizes(self, limit: int = 256) -> list[int]:
        """Every valid size from the smallest up to ``limit`` (inclusive), as a list of ints."""
        if self.exact is not None:
            return [self.exact] if self.exact <= limit else []
        first = -(-self.minimum // self.multiple) * self.multiple
        return list(range(first, limit + 1, self.multiple))

    def describe(self) -> str:
        """The rule in words for docs and errors, e.g. ``"multiples of 8"``."""
        if self.exact is not None:
            return f"exactly {self.exact}"
        if self.multiple == 1:
            return f"any size >= {self.minimum}"
        if self.minimum <= self.multiple:
            return f"multiples of {self.multiple}"
        return f"multiples of {self.multiple}, at least {self.minimum}"

    def _requirement(self) -> str:
        if self.exact is not None:
            return f"needs spatial size {self.exact} on every spatial axis"
        if self.multiple == 1:
            return f"needs spatial sizes of at least {self.minimum}"
        if self.minimum <= self.multiple:
            return f"needs spatial sizes divisible by {self.multiple}"
        return f"needs spatial sizes divisible by {self.multiple} and at least {self.minimum}"

    def check(self, spatial_shape: Sequence[int | None], first_axis: int = 2) -> None:
        """Raise ValueError naming the first invalid size and the nearest valid ones.

        Args:
            spatial_shape: the spatial sizes, e.g. ``x.shape[2:]`` of an ``(N, C, D, H, W)`` input;
                None (an unknown size while tracing) is skipped.
            first_axis: the axis of the first spatial size in the full input, used in the message.
        """
        for offset, size in enumerate(spatial_shape):
            if size is None or self.is_valid(int(size)):
                continue
            nearest = self.nearest(int(size))
            valid = " and ".join(str(n) for n in nearest)
            noun = "size is" if len(nearest) == 1 else "sizes are"
            raise ValueError(
                f"{self.model} {self._requirement()}; got {int(size)} on axis {first_axis + offset} "
                f"(input spatial shape {tuple(spatial_shape)}); nearest valid {noun} {valid}; "
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
