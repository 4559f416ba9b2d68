"""Experiment configuration: defaults, shipped configs, validation errors, ``--set`` overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from delira.training.config import DEFAULTS, ConfigError, apply_overrides, load_config, parse_override

SHIPPED = Path(__file__).parents[2] / "packages/delira-training/src/delira/training/configs"


def test_no_config_is_the_builtin_default():
    config = load_config(None)
    assert config == DEFAULTS
    assert config is not DEFAULTS  # a copy: changing it cannot change the defaults
    assert config["model"]["name"] == "unet" and config["data"]["kind"] == "phantom"
    assert config["experiment"]["folds"] == 3


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_configs_validate_and_keep_their_values(path):
    raw = yaml.safe_load(path.read_text())
    config = load_config(path)

    def check(written, resolved, where):  # every value written in the file survives the merge
        if isinstance(written, dict) and where[-1:] != ["args"]:
            for key, value in written.items():
                check(value, resolved[key], [*where, key])
        else:
            assert (
                resolved == pytest.approx(written) if isinstance(written, float) else resolved == written
            ), where

    check(raw, config, [])
    # and the same config is found by its name
    assert load_config(path.stem) == config


def test_the_shipped_default_is_the_builtin_default():
    assert load_config(SHIPPED / "unet3d-phantom.yaml") == DEFAULTS


def test_shipped_configs_cover_the_examples_of_the_issue():
    configs = {p.stem: load_config(p) for p in SHIPPED.glob("*.yaml")}
    kinds = {(c["model"]["name"], c["backend"], c["data"]["kind"]) for c in configs.values()}
    assert ("unet", "torch", "phantom") in kinds
    assert ("unet", "tf", "phantom") in kinds
    assert ("dcgan", "torch", "phantom") in kinds
    assert ("unet", "torch", "decathlon") in kinds
    assert any(
        c["model"]["name"].startswith("resnet") and c["model"]["args"]["spatial_dims"] == 3
        for c in configs.values()
    )


def test_unknown_keys_suggest_the_nearest_valid_one():
    with pytest.raises(ConfigError) as info:
        load_config({"trainig": {"epochs": 2}})
    assert "trainig: unknown key; did you mean 'training'?" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config({"training": {"epoch": 2}, "data": {"phantom": {"num_case": 4}}})
    message = str(info.value)
    assert "training.epoch: unknown key; did you mean 'epochs'?" in message
    assert "data.phantom.num_case: unknown key; did you mean 'num_cases'?" in message
    assert len(info.value.problems) == 2  # every problem at once


def test_wrong_types_name_the_key_and_the_expected_type():
    with pytest.raises(ConfigError) as info:
        load_config({"training": {"epochs": "ten", "lr": [1]}, "data": {"patch_size": "big"}})
    problems = info.value.problems
    assert any(p.startswith("training.epochs: expected an integer") and "'ten'" in p for p in problems)
    assert any(p.startswith("training.lr: expected a number") for p in problems)
    assert any(p.startswith("data.patch_size: expected a list of integers") for p in problems)
    assert all("--set" in p for p in problems)  # says how to fix it
    with pytest.raises(ConfigError, match=r"training\.epochs: expected an integer.*got bool"):
        load_config({"training": {"epochs": True}})


def test_choices_ranges_and_cross_key_rules():
    with pytest.raises(
        ConfigError, match=r"backend: 'pytorch' is not one of \['torch', 'tf'\]; did you mean 'torch'\?"
    ):
        load_config({"backend": "pytorch"})
    with pytest.raises(ConfigError, match=r"training\.epochs: 0 is below the minimum 1"):
        load_config({"training": {"epochs": 0}})
    with pytest.raises(ConfigError, match=r"data\.path: data\.kind is 'decathlon' but no path is given"):
        load_config({"data": {"kind": "decathlon"}})
    with pytest.raises(ConfigError, match=r"model\.name: 'resnet18' does not fit task 'segmentation'"):
        load_config({"model": {"name": "resnet18", "args": {}}})


def test_set_overrides_parse_yaml_values():
    assert parse_override("training.epochs=5") == (["training", "epochs"], 5)
    assert parse_override("training.lr=1e-4") == (["training", "lr"], 1e-4)
    assert parse_override("data.patch_size=[16, 16, 16]") == (["data", "patch_size"], [16, 16, 16])
    assert parse_override("training.grad_clip=null") == (["training", "grad_clip"], None)
    config = load_config(None, ["training.epochs=5", "model.args.features=[4, 8]", "backend=tf"])
    assert config["training"]["epochs"] == 5
    assert config["model"]["args"] == {**DEFAULTS["model"]["args"], "features": [4, 8]}
    assert config["backend"] == "tf"
    assert DEFAULTS["training"]["epochs"] == 40  # untouched
    with pytest.raises(ConfigError, match=r"training\.epohcs: unknown key; did you mean 'epochs'\?"):
        load_config(None, ["training.epohcs=5"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides(DEFAULTS, ["training.epochs"])


def test_yaml_numbers_in_exponent_notation_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  lr: 1e-4\n  weight_decay: 3E-5\n")
    config = load_config(path)
    assert config["training"]["lr"] == pytest.approx(1e-4)
    assert config["training"]["weight_decay"] == pytest.approx(3e-5)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(
        ConfigError, match=r"no such file; give a YAML file or a shipped config: .*unet3d-phantom"
    ):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match=r"(?s)bad\.yaml.*not valid YAML"):
        load_config(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_config(listed)
    typo = tmp_path / "typo.yaml"
    typo.write_text("modle:\n  name: unet\n")
    with pytest.raises(
        ConfigError, match=r"(?s)in .*typo\.yaml.*modle: unknown key; did you mean 'model'\?"
    ) as info:
        load_config(typo)
    assert str(typo) in str(info.value)


def test_the_configuration_reference_lists_every_key():
    from delira.training.config import SCHEMA, Field

    text = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()

    def keys(schema, prefix=""):
        for name, spec in schema.items():
            if isinstance(spec, Field):
                yield prefix + name
            else:
                yield from keys(spec, f"{prefix}{name}.")

    missing = [key for key in keys(SCHEMA) if f"`{key}`" not in text]
    assert not missing, f"docs/configuration.md does not describe {missing}"


UNET_ARGS = {"spatial_dims": 3, "in_channels": 1, "num_classes": 3, "features": [8, 16, 32]}


def _leaves(schema, prefix=""):
    from delira.training.config import Field

    for name, spec in schema.items():
        if isinstance(spec, Field):
            yield prefix + name, spec
        else:
            yield from _leaves(spec, f"{prefix}{name}.")


def test_defaults_are_the_schemas_defaults():
    from delira.training.config import SCHEMA

    leaves = dict(_leaves(SCHEMA))
    flat = {}

    def walk(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict) and (prefix + key) not in leaves:
                walk(value, f"{prefix}{key}.")
            else:
                flat[prefix + key] = value

    walk(DEFAULTS)
    assert flat.keys() == leaves.keys()  # one tree: every key, no other
    assert all(flat[key] == spec.default for key, spec in leaves.items())
    assert all(spec.doc for spec in leaves.values()), "every key has a doc"
    # hand-picked values of the built-in job
    assert DEFAULTS["model"] == {"name": "unet", "args": UNET_ARGS}
    assert DEFAULTS["training"]["lr"] == 0.01 and DEFAULTS["data"]["phantom"]["shape"] == [32, 32, 32]
    # a copy: changing the defaults cannot change the schema
    assert DEFAULTS["data"]["phantom"]["shape"] is not SCHEMA["data"]["phantom"]["shape"].default


def test_merge_drops_the_old_models_args_when_the_name_changes():
    from delira.training.config import merge

    before = {"model": {"name": "unet", "args": dict(UNET_ARGS)}, "task": "segmentation"}
    assert merge(before, {"model": {"name": "resnet18"}}) == {
        "model": {"name": "resnet18", "args": {}},
        "task": "segmentation",
    }
    assert merge(before, {"model": {"name": "resnet18", "args": {"width": 8}}})["model"] == {
        "name": "resnet18",
        "args": {"width": 8},
    }
    # the same model (also spelled differently): given args merge key-wise into the old ones
    assert merge(before, {"model": {"args": {"features": [4, 8]}}})["model"]["args"] == {
        "spatial_dims": 3,
        "in_channels": 1,
        "num_classes": 3,
        "features": [4, 8],
    }
    assert merge(before, {"model": {"name": "UNet", "args": {"num_classes": 5}}})["model"] == {
        "name": "UNet",
        "args": {"spatial_dims": 3, "in_channels": 1, "num_classes": 5, "features": [8, 16, 32]},
    }
    assert before == {"model": {"name": "unet", "args": UNET_ARGS}, "task": "segmentation"}  # untouched


def test_a_file_or_set_that_changes_the_model_drops_the_unet_args(tmp_path):
    path = tmp_path / "resnet.yaml"
    path.write_text("task: classification\nmodel:\n  name: resnet18\n")
    assert load_config(path)["model"] == {"name": "resnet18", "args": {}}
    config = load_config(None, ["task=classification", "model.name=resnet18"])
    assert config["model"] == {"name": "resnet18", "args": {}}
    # arguments given with the new name are kept, in either order
    for sets in (
        ["model.name=resnet18", "model.args.width=8"],
        ["model.args.width=8", "model.name=resnet18"],
    ):
        config = load_config(None, ["task=classification", *sets])
        assert config["model"] == {"name": "resnet18", "args": {"width": 8}}, sets
    # --set of the same name keeps the arguments
    assert load_config(None, ["model.name=unet"])["model"] == {"name": "unet", "args": UNET_ARGS}


def test_model_args_are_checked_against_the_models_config():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["model.args.featurs=[4, 8]", "model.args.norm=group", "model.args.in_channels=0"])
    problems = info.value.problems
    assert len(problems) == 3
    assert any(
        p.startswith("model.args.featurs: unknown argument; did you mean 'features'?")
        and "--set model.args.featurs=" in p
        for p in problems
    )
    assert any(p.startswith("model.args.norm: UNet: norm must be 'instance' or 'batch'") for p in problems)
    assert any(
        p.startswith("model.args.in_channels: UNet: in_channels must be a positive int") for p in problems
    )
    with pytest.raises(ConfigError, match=r"model\.args\.depth: model 'resnet18' has depth=18; got 34"):
        load_config({"task": "classification", "model": {"name": "resnet18", "args": {"depth": 34}}})
    with pytest.raises(ConfigError, match=r"model\.name: unknown model 'unett'.*did you mean 'unet'\?"):
        load_config({"model": {"name": "unett"}})
    # the default's features contradict a num_stages merged into them: the fix is named, and works
    with pytest.raises(
        ConfigError, match=r"model\.args\.num_stages: .*set features to None \(null in YAML\)"
    ):
        load_config(None, ["model.args.num_stages=4"])
    config = load_config(None, ["model.args.features=null", "model.args.num_stages=4"])
    assert config["model"]["args"] == {
        "spatial_dims": 3,
        "in_channels": 1,
        "num_classes": 3,
        "features": None,
        "num_stages": 4,
    }


def test_task_and_model_name_come_from_the_registry():
    # every classification model of the registry fits, also the generic resnet with a depth
    config = load_config({"task": "classification", "model": {"name": "resnet", "args": {"depth": 34}}})
    assert config["model"] == {"name": "resnet", "args": {"depth": 34}}
    with pytest.raises(ConfigError, match=r"'dcgan_generator' does not fit task 'gan'.*\['dcgan'\]"):
        load_config({"task": "gan", "model": {"name": "dcgan_generator"}})
    with pytest.raises(
        ConfigError, match=r"'unet' does not fit task 'classification'.*\['resnet', 'resnet18'"
    ):
        load_config({"task": "classification"})


def test_loading_a_config_imports_no_framework():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from delira.training.config import load_config\n"
        "load_config(None, ['task=classification', 'model.name=resnet18', 'model.args.spatial_dims=3'])\n"
        "assert not {'torch', 'tensorflow', 'keras'} & set(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_configuration_reference_is_the_generated_one():
    from delira.training.config import reference_markdown

    path = Path(__file__).parents[2] / "docs" / "configuration.md"
    text = path.read_text()
    assert text == reference_markdown(text), (
        "docs/configuration.md's key table differs from the schema; regenerate it with "
        "python -c 'import delira.training.config as c; c.write_reference(\"docs/configuration.md\")'"
    )
    table = reference_markdown()
    # rows checked by hand: key, default as YAML, type, doc with choices and minimum
    assert "| `training.epochs` | `40` | an integer | training epochs per fold; >= 1 |" in table
    assert (
        "| `data.path` | `null` | a string or null | root folder of an MSD-layout dataset (kind: decathlon) |"
        in table
    )
    assert "| `backend` | `torch` | a string | the deep-learning framework; one of `torch`, `tf` |" in table
    assert "`{spatial_dims: 3, in_channels: 1, num_classes: 3, features: [8, 16, 32]}`" in table
    assert "| `training.precision` | `'32'` |" in table
    assert (
        "classification: resnet, resnet18, resnet34, resnet50" in table
    )  # model.name's doc, from the registry
    with pytest.raises(ValueError, match="no generated key reference"):
        reference_markdown("# a page without the markers\n")


def test_a_files_model_args_are_the_whole_argument_set_and_set_merges_into_them(tmp_path):
    """A config file's model.args are the model's arguments (the built-in job's UNet features do not
    leak into them); a --set on top merges key-wise into what the file gave."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "model:\n  name: unet\n  args: {spatial_dims: 2, in_channels: 4, num_classes: 2}\n"
        "data:\n  phantom: {shape: [32, 32]}\n"
    )
    assert load_config(path)["model"]["args"] == {"spatial_dims": 2, "in_channels": 4, "num_classes": 2}
    merged = load_config(path, ["model.args.features=[4, 8]"])["model"]["args"]
    assert merged == {"spatial_dims": 2, "in_channels": 4, "num_classes": 2, "features": [4, 8]}


def test_schedule_args_are_checked_against_the_schedule_and_reach_the_trainer(tmp_path):
    from delira.training.config import ConfigError, load_config

    config = load_config({"training": {"schedule": "poly", "schedule_args": {"exponent": 2.0}}})
    assert config["training"]["schedule_args"] == {"exponent": 2.0}
    with pytest.raises(ConfigError, match=r"schedule_args.*gamma.*poly"):
        load_config({"training": {"schedule": "poly", "schedule_args": {"gamma": 0.5}}})
    with pytest.raises(ConfigError, match=r"exponent.*> 0"):
        load_config({"training": {"schedule": "poly", "schedule_args": {"exponent": -1}}})
    with pytest.raises(ConfigError, match="is null"):
        load_config({"training": {"schedule": None, "schedule_args": {"exponent": 2}}})
    pytest.importorskip("torch")
    from delira.training.experiment import Experiment

    experiment = Experiment(
        {"training": {"schedule": "step", "schedule_args": {"step_size": 1, "gamma": 0.5}, "lr": 0.1}},
        run_dir=tmp_path / "run",
        verbose=False,
    )
    trainer = experiment._trainer(None, 0)
    assert trainer.scheduler_kwargs == {"step_size": 1, "gamma": 0.5}
    assert [trainer._named_lr(e) for e in range(3)] == pytest.approx([0.1, 0.05, 0.025])
