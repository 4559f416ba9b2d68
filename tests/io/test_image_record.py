"""The Image record: defaults, validation and the voxel-to-world affine."""

from __future__ import annotations

import numpy as np
import pytest

from delira.io import Image


def test_defaults_for_a_plain_array():
    image = Image(np.zeros((4, 5, 6), np.float32))
    assert image.ndim == 3
    assert image.spacing == (1.0, 1.0, 1.0)
    assert image.origin == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(image.direction, np.eye(3))
    assert image.meta == {}
    assert image.has_default_geometry()


def test_extra_axes_follow_the_spatial_ones():
    image = Image(np.zeros((4, 5, 6, 2)), spacing=(1, 2, 3))
    assert image.ndim == 3
    assert image.spatial_shape == (4, 5, 6)
    assert Image(np.zeros((4, 5, 6, 7))).ndim == 3  # without geometry: at most 3 spatial axes


def test_affine_maps_an_index_to_the_world_by_hand():
    # direction: x axis along world +y, y axis along world -x, z along z
    direction = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    image = Image(
        np.zeros((2, 3, 4)), spacing=(0.5, 2.0, 3.0), origin=(10.0, 20.0, 30.0), direction=direction
    )
    # voxel (1, 2, 3): 1 * 0.5 along +y, 2 * 2 along -x, 3 * 3 along +z
    world = image.affine @ np.array([1, 2, 3, 1.0])
    np.testing.assert_allclose(world[:3], [10.0 - 4.0, 20.0 + 0.5, 30.0 + 9.0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spacing": (1.0, 1.0)}, "origin has 3 values"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing must be finite and > 0"),
        ({"direction": np.eye(2), "spacing": (1, 1, 1)}, "direction has shape (2, 2)"),
        ({"direction": np.zeros((3, 3))}, "invertible"),
        ({"spacing": (1, 1, 1, 1, 1)}, "5 spatial axes"),
    ],
)
def test_invalid_geometry_says_what_is_wrong(kwargs, message):
    kwargs.setdefault("origin", (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Image(np.zeros((2, 3, 4)), **kwargs)
