"""The model registry without a framework: tasks of the models, argument checks that list every problem."""

from __future__ import annotations

import subprocess
import sys

import pytest

from delira.models.registry import (
    TASKS,
    ModelArgumentError,
    available_models,
    canonical_name,
    check_model_args,
    model_arguments,
    model_task,
    models_for_task,
)


def test_models_for_each_task():
    assert models_for_task("segmentation") == ["unet"]
    assert models_for_task("classification") == ["resnet", "resnet18", "resnet34", "resnet50"]
    assert models_for_task("gan") == ["dcgan"]
    # the sub-networks belong to no task, every other model to exactly one
    listed = [name for task in TASKS for name in models_for_task(task)]
    assert sorted(listed) == sorted(set(available_models()) - {"dcgan_generator", "dcgan_discriminator"})
    assert model_task("dcgan_generator") is None and model_task("dcgan_discriminator") is None
    assert model_task("ResNet-18") == "classification"


def test_unknown_task_and_name_suggest_the_nearest():
    with pytest.raises(ValueError, match=r"unknown task 'segmentaton'.*did you mean 'segmentation'\?"):
        models_for_task("segmentaton")
    with pytest.raises(ValueError, match=r"unknown model 'unett'.*did you mean 'unet'\?"):
        model_task("unett")
    with pytest.raises(ValueError, match=r"unknown model"):
        check_model_args("vgg", {})
    assert canonical_name("ResNet 34") == "resnet34"


def test_model_arguments_are_the_config_fields():
    assert model_arguments("resnet18") == ["depth", "spatial_dims", "in_channels", "num_classes", "width"]
    assert model_arguments("dcgan") == [
        "spatial_dims",
        "latent_dim",
        "channels",
        "image_size",
        "generator_features",
        "discriminator_features",
    ]


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("unet", {}),
        ("unet", {"spatial_dims": 3, "in_channels": 1, "num_classes": 3, "features": [8, 16, 32]}),
        ("unet", {"spatial_dims": 3, "features": [8, 16], "strides": [[1, 1, 1], [2, 2, 1]]}),
        ("resnet18", {"spatial_dims": 3, "width": 8, "depth": 18}),
        ("resnet", {"depth": 50}),
        ("dcgan", {"spatial_dims": 2, "channels": 1, "image_size": 32, "latent_dim": 32}),
    ],
)
def test_valid_arguments_pass(name, args):
    assert check_model_args(name, args) is None


def test_every_unknown_and_invalid_argument_is_listed():
    args = {"featurs": [4, 8], "in_channel": 2, "num_classes": 0, "norm": "group", "spatial_dims": 3}
    with pytest.raises(ModelArgumentError) as info:
        check_model_args("unet", args)
    problems = dict(info.value.problems)
    assert set(problems) == {"featurs", "in_channel", "num_classes", "norm"}
    assert "did you mean 'features'?" in problems["featurs"]
    assert "did you mean 'in_channels'?" in problems["in_channel"]
    assert "takes spatial_dims, in_channels, num_classes, features" in problems["featurs"]
    assert "num_classes must be a positive int; got 0" in problems["num_classes"]
    assert "'instance' or 'batch'; got 'group'" in problems["norm"]
    assert isinstance(info.value, ValueError)
    assert "4 problem(s)" in str(info.value)


def test_arguments_the_name_fixes_and_errors_that_name_another_field():
    with pytest.raises(ModelArgumentError) as info:
        check_model_args("resnet18", {"depth": 34})
    assert info.value.problems[0][0] == "depth" and "use model 'resnet'" in info.value.problems[0][1]
    # every problem of a DCGAN is named by the DCGAN's own argument
    with pytest.raises(ModelArgumentError) as info:
        check_model_args("dcgan", {"channels": 0, "image_size": 30, "latent_dim": 8})
    assert [key for key, _ in info.value.problems] == ["channels", "image_size"]
    assert "DCGAN: channels must be a positive int" in info.value.problems[0][1]
    # a message that names no given argument: the culprit is the one whose removal fixes it
    with pytest.raises(ModelArgumentError) as info:
        check_model_args("unet", {"strides": [1], "num_classes": 3})
    assert [key for key, _ in info.value.problems] == ["strides"]
    # a value of the wrong type (not iterable) is reported, not raised as a TypeError
    with pytest.raises(ModelArgumentError) as info:
        check_model_args("unet", {"features": 5})
    assert info.value.problems[0][0] == "features"
    with pytest.raises(ValueError, match="must be a mapping"):
        check_model_args("unet", [1, 2])  # type: ignore[arg-type]


def test_checks_import_no_framework():
    code = (
        "import sys\n"
        "from delira.models.registry import check_model_args, models_for_task\n"
        "models_for_task('gan')\n"
        "check_model_args('unet', {'spatial_dims': 3})\n"
        "assert not {'torch', 'tensorflow', 'keras'} & set(sys.modules), sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_functions_are_exported_from_the_package():
    import delira.models
    from delira.models import registry

    names = [
        "TASKS",
        "ModelArgumentError",
        "canonical_name",
        "check_model_args",
        "model_arguments",
        "model_task",
        "models_for_task",
    ]
    for name in names:
        assert name in delira.models.__all__, name
        assert getattr(delira.models, name) is getattr(registry, name)
