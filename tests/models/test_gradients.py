"""Gradient flow: one backward pass reaches every trainable weight of every model, finite and non-zero."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_every_weight_gets_a_gradient(fw, case, spatial_dims, make_input):
    fw.seed(1)
    model = fw.build(case["name"], spatial_dims=spatial_dims, **case["kwargs"])
    if case["name"] == "dcgan":
        model = model.generator  # the wrapper's discriminator is checked on its own case
    grads = fw.gradients(model, make_input(case, spatial_dims, n=3))
    assert grads, "the model has no trainable weights"
    missing = [name for name, g in grads.items() if g is None]
    assert not missing, f"no gradient reaches {missing}"
    bad = [name for name, g in grads.items() if not np.all(np.isfinite(g))]
    assert not bad, f"non-finite gradients in {bad}"
    zero = [name for name, g in grads.items() if not np.any(g)]
    assert not zero, f"all-zero gradients in {zero}"
