"""Config overrides and validation: keys, types and ranges, all checked on the plain dict."""

from __future__ import annotations

import copy
import inspect

import pytest

from metajax import ConfigError, MetajaxError, UnknownNameError, apply_overrides, experiment_config
from metajax.config import DEFAULTS, _allowed_types, flat_keys, parse_value, validate
from metajax.registry import names
from metajax.runner.train import prepare_config


def _tiny():
    return experiment_config("maml-sinusoid-tiny")


def test_every_registered_experiment_validates_without_being_changed():
    for name in names("experiments"):
        config = experiment_config(name)
        before = copy.deepcopy(config)
        try:
            validate(config)
        except MetajaxError as e:
            pytest.fail(f"{name}: {e}")
        assert config == before


def test_aliases_and_values_parse_like_json_then_python():
    config = apply_overrides(_tiny(), ["inner_lr=0.1", "inner_steps=3", "shots=5", "model.hidden=[8, 8]", "seed=2"])
    assert config["learner"]["inner_opt"]["lr"] == 0.1 and config["learner"]["inner_steps"] == 3
    assert config["data"]["shots"] == 5 and config["model"]["hidden"] == [8, 8] and config["seed"] == 2
    assert parse_value("(1, 2)") == (1, 2) and parse_value("relu") == "relu" and parse_value("null") is None


def test_component_parameter_not_yet_in_config_can_be_set():
    config = apply_overrides(_tiny(), ["learner.first_order=true", "model.activation=tanh"])
    validate(config)
    assert config["learner"]["first_order"] is True


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("data.shots=true", r"data\.shots=True has the wrong type: expected int, got bool"),
        ("data.shots=2.5", r"data\.shots=2\.5 has the wrong type"),
        ('learner.first_order="yes"', r"learner\.first_order='yes' has the wrong type: expected bool"),
        ('model.hidden="40"', r"model\.hidden='40' has the wrong type: expected list"),
        ('outer_opt.lr="fast"', r"outer_opt\.lr='fast' has the wrong type: expected number"),
        ("outer_lr=Infinity", r"outer_opt\.lr=inf has the wrong type"),
        ("steps=1.5", r"steps=1\.5 is invalid"),
        ("steps=-1", r"steps=-1 is invalid"),
        ("seed=-3", r"seed=-3 is invalid"),
        ("log_every=0", r"log_every=0 is invalid"),
        ("checkpoint.keep=0", r"checkpoint\.keep=0 is invalid"),
        ("eval.inner_steps=-1", r"eval\.inner_steps=-1 is invalid"),
        ("task_batching=3", r"task_batching=3 is invalid"),
        ("guard.nonfinite=true", r"guard\.nonfinite=True is invalid"),
        ("checkpoint=[]", r"config checkpoint=\[\] must be a dict"),
        ("data.name=5", r"data\.name=5 must be a registered name"),
    ],
)
def test_wrong_types_and_ranges_are_one_line_config_errors(override, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        validate(apply_overrides(_tiny(), [override]))
    assert "\n" not in str(info.value)


def test_unknown_keys_in_every_section_name_close_matches():
    for dotted, fix in (("eval.evrey", "every"), ("checkpoint.kepp", "keep"), ("guard.nonfinit", "nonfinite")):
        config = _tiny()
        section, key = dotted.split(".")
        config[section][key] = 1
        with pytest.raises(ConfigError, match=f"unknown config key {section}.'{key}'; did you mean '{fix}'"):
            validate(config)
    with pytest.raises(ConfigError, match=r"unknown top-level config key 'stpes'; did you mean 'steps'"):
        validate({**_tiny(), "stpes": 3})
    with pytest.raises(UnknownNameError, match=r"unknown optimizer 'adma'; did you mean 'adam'"):
        validate(apply_overrides(_tiny(), ['outer_opt={"name": "adma", "lr": 0.1}']))


def test_prepare_config_fills_runner_keys_an_older_config_lacks():
    config = _tiny()
    del config["guard"], config["log_every"]
    with pytest.raises(ConfigError, match="config needs the 'guard' section"):
        validate(copy.deepcopy(config))
    resolved = prepare_config(config)
    assert resolved["guard"] == DEFAULTS["guard"] and resolved["log_every"] == DEFAULTS["log_every"]
    assert resolved["task_batching"] != "auto"
    with pytest.raises(ConfigError, match="a config must be a dict"):
        prepare_config([1, 2])


def test_allowed_types_read_from_factory_annotations():
    def factory(a: int, b: float | None = None, c: tuple[float, float] = (0, 1), d: Model = None, e=3):  # noqa: F821
        pass

    params = inspect.signature(factory).parameters
    assert _allowed_types(params["a"]) == (int,)
    assert set(_allowed_types(params["b"])) == {int, float, type(None)}
    assert set(_allowed_types(params["c"])) == {list, tuple}
    assert _allowed_types(params["d"]) is None and _allowed_types(params["e"]) is None


def test_flat_keys_list_every_leaf_but_free_form_reference():
    keys = flat_keys(_tiny())
    assert "learner.inner_opt.lr" in keys and "guard.nonfinite" in keys and "reference" in keys
    assert not any(k.startswith("reference.") for k in keys)


def test_model_out_features_may_be_set_and_a_mismatch_is_one_line(tmp_path):
    from metajax import run

    config = apply_overrides(experiment_config("maml-sinusoid-tiny"), ["model.out_features=3"])
    assert config["model"]["out_features"] == 3
    with pytest.raises(ConfigError, match=r"mse: predictions \(10, 3\) and targets \(10, 1\) differ"):
        run(config, tmp_path / "run", progress=False)


def _conv_impl(name, *overrides):
    return prepare_config(apply_overrides(experiment_config(name), list(overrides)))["model"].get("conv_impl")


def test_conv_impl_is_resolved_once_from_the_strategy_and_recorded():
    import jax

    from metajax.core.batching import conv_impl_for, default_strategy
    from metajax.runner.build import resolve_task_batching

    name = "maml-omniglot-5w1s-tiny"  # conv4, model.conv_impl left unset
    assert "conv_impl" not in experiment_config(name)["model"]
    resolved = prepare_config(apply_overrides(experiment_config(name), ["task_batching=map+patches"]))
    assert resolved["model"]["conv_impl"] == "patches"  # in the config config.json records
    assert validate(copy.deepcopy(resolved)) == resolved  # a recorded config validates again
    assert resolve_task_batching(resolved) == resolved  # once: resolving again changes nothing
    assert _conv_impl(name, "task_batching=vmap") == "xla"
    assert _conv_impl(name, "task_batching=chunked:2+patches", "model.conv_impl=auto") == "patches"
    assert _conv_impl(name) == conv_impl_for(default_strategy(jax.default_backend(), "conv4"))
    # an explicit value wins over the strategy, both ways
    assert _conv_impl(name, "task_batching=map+patches", "model.conv_impl=xla") == "xla"
    assert _conv_impl(name, "task_batching=vmap", "model.conv_impl=patches") == "patches"
    # models without the parameter get no key
    assert _conv_impl("maml-sinusoid-tiny", "task_batching=vmap+patches") is None
    assert _conv_impl("metaoptnet-miniimagenet-5w1s-tiny", "task_batching=map+patches") is None


def test_a_run_record_without_conv_impl_compares_equal_to_its_resolution():
    from metajax.runner.checkpoint import comparable, config_changes

    new = prepare_config(apply_overrides(experiment_config("maml-omniglot-5w1s-tiny"), ["task_batching=map+patches"]))
    old = copy.deepcopy(new)
    del old["model"]["conv_impl"]  # written before the key was recorded: the strategy chose patches
    assert config_changes(comparable(old), comparable(new)) == []
    old["model"]["conv_impl"] = "xla"
    assert config_changes(comparable(old), comparable(new)) == ["model.conv_impl: 'xla' -> 'patches'"]
    # ... and the implementation, like task_batching, is not part of what a run measures
    from metajax.runner.report import differences

    assert differences(old, new) == []
