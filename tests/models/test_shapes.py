"""Output shapes of every model in 2D and 3D, in both frameworks, against the documented shapes."""

from __future__ import annotations

import pytest


def expected_shapes(case, spatial_dims, n=2):
    """The documented output shape(s), written out from the docstrings, not from the code."""
    kw = case["kwargs"]
    name = case["name"]
    if name.startswith("resnet"):
        return [(n, kw["num_classes"])]
    if name == "unet":
        size = {2: 32, 3: 16}[spatial_dims]
        stages = len(kw["features"]) if "features" in kw else kw["num_stages"]
        count = stages - 1 if kw.get("deep_supervision") else 1
        return [(n, kw["num_classes"], *[size // 2**k] * spatial_dims) for k in range(count)]
    if name == "dcgan_discriminator":
        return [(n,)]
    channels = kw.get("out_channels", kw.get("channels"))
    return [(n, channels, *[kw["image_size"]] * spatial_dims)]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_output_shapes(fw, case, spatial_dims, make_input):
    fw.seed(0)
    model = fw.build(case["name"], spatial_dims=spatial_dims, **case["kwargs"])
    x = make_input(case, spatial_dims)
    out = fw.forward(model, x)
    outputs = out if isinstance(out, list) else [out]
    assert [o.shape for o in outputs] == expected_shapes(case, spatial_dims)
    for o in outputs:
        assert o.dtype == "float32"
    if case["name"] in ("dcgan_generator", "dcgan"):
        assert abs(outputs[0]).max() <= 1.0  # tanh


@pytest.mark.parametrize("size", [17, 23, 40])
def test_resnet_takes_any_size(fw, size):
    model = fw.build("resnet18", spatial_dims=2, in_channels=1, num_classes=2, width=2)
    import numpy as np

    assert fw.forward(model, np.zeros((1, 1, size, size + 1), np.float32)).shape == (1, 2)
