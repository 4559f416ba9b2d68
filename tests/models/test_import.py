"""Importing delira.models imports neither framework; the backends load only when asked for."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def run(code, **env):
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


FRAMEWORKS = "sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules)"


def test_importing_delira_models_imports_no_framework():
    code = (
        "import sys, json, delira.models, delira.models.convert, delira.models.configs;"
        "from delira.models import valid_input_sizes, check_input_size, available_models;"
        "valid_input_sizes('unet', num_stages=3); check_input_size('resnet18', (9, 9)); available_models();"
        f"print(json.dumps({FRAMEWORKS}))"
    )
    assert run(code) == []


def test_invalid_arguments_fail_before_a_framework_is_imported():
    code = (
        "import sys, json, delira.models\n"
        "try:\n    delira.models.get_model('unet', backend='torch', norm='group')\n"
        "except ValueError:\n    pass\n"
        f"print(json.dumps({FRAMEWORKS}))"
    )
    assert run(code) == []


@pytest.mark.torch
def test_torch_backend_imports_only_torch():
    code = (
        "import sys, json, delira.models;"
        "m = delira.models.torch.UNet(base_features=2, num_stages=2);"
        "assert type(m).__module__ == 'delira.models.torch.unet';"
        f"print(json.dumps({FRAMEWORKS}))"
    )
    assert run(code) == ["torch"]


@pytest.mark.tf
def test_tf_backend_imports_tensorflow_not_torch():
    code = (
        "import sys, json, delira.models;"
        "m = delira.models.get_model('resnet18', backend='tf', width=2);"
        "assert type(m).__module__ == 'delira.models.tf.resnet';"
        f"print(json.dumps({FRAMEWORKS}))"
    )
    assert run(code) == ["keras", "tensorflow"]


def test_lazy_attributes():
    import delira.models

    assert {"torch", "tf", "convert"} <= set(dir(delira.models))
    with pytest.raises(AttributeError, match="has no attribute 'jax'"):
        delira.models.jax  # noqa: B018


@pytest.mark.torch
@pytest.mark.tf
def test_both_backends_export_the_same_names():
    import delira.models.tf as mtf
    import delira.models.torch as mtorch

    assert set(mtorch.__all__) | {"channels_first"} == set(mtf.__all__)
    for name in mtorch.__all__:
        assert getattr(mtorch, name).__name__ == getattr(mtf, name).__name__


def test_a_missing_framework_names_the_extra_to_install():
    # a stand-in "torch" that is not importable: the same ModuleNotFoundError as a missing install
    code = (
        "import sys, json, delira.models\n"
        "sys.modules['torch'] = None\n"
        "try:\n    delira.models.get_model('unet')\n"
        "except ImportError as exc:\n    print(json.dumps(str(exc)))\n"
    )
    message = run(code)
    assert "needs torch, which is not installed" in message
    assert "pip install 'delira-models[torch]'" in message
