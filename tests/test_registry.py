"""The registry: names, duplicates, close matches, user modules."""

from __future__ import annotations

import pytest

from metajax import ConfigError, UnknownNameError, register, register_experiment
from metajax.registry import get, load_module, names


def test_builtin_experiments_are_registered():
    expected = {
        f"{learner}-sinusoid{suffix}"
        for learner in ("maml", "fomaml", "metasgd", "anil", "reptile")
        for suffix in ("", "-5shot")
    }
    assert expected <= set(names("experiments"))
    assert {"maml", "fomaml", "metasgd", "anil", "reptile"} <= set(names("learners"))


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownNameError, match="did you mean 'maml-sinusoid'"):
        get("experiments", "mamll-sinusoid")


def test_duplicate_registration_is_an_error():
    register("optimizers", "test-dup-opt")(lambda lr: None)
    with pytest.raises(ConfigError, match="already registered"):
        register("optimizers", "test-dup-opt")(lambda lr: None)


def test_sinusoid_protocol_matches_the_maml_paper():
    config = get("experiments", "maml-sinusoid")()
    assert config["steps"] == 70_000 and config["meta_batch_size"] == 25
    assert config["model"]["hidden"] == [40, 40] and config["model"]["activation"] == "relu"
    assert config["learner"]["inner_steps"] == 1 and config["learner"]["inner_opt"] == {"name": "sgd", "lr": 0.01}
    assert config["outer_opt"] == {"name": "adam", "lr": 1e-3}
    assert config["data"]["shots"] == 10 and get("experiments", "maml-sinusoid-5shot")()["data"]["shots"] == 5


def test_user_module_from_a_file_registers(tmp_path):
    module = tmp_path / "my_experiments.py"
    module.write_text(
        "from metajax import register_experiment\n"
        "from metajax.registry import get\n"
        "@register_experiment('user-test-exp')\n"
        "def exp():\n"
        "    return {**get('experiments', 'maml-sinusoid-tiny')(), 'steps': 3}\n"
    )
    load_module(str(module))
    load_module(str(module))  # importing twice is harmless
    assert get("experiments", "user-test-exp")()["steps"] == 3


def test_missing_user_module_is_a_clear_error():
    with pytest.raises(ConfigError, match="does not exist"):
        load_module("/nonexistent/exps.py")
    with pytest.raises(ConfigError, match="cannot import"):
        load_module("no_such_module_xyz")


def test_register_experiment_is_register_for_experiments():
    @register_experiment("test-reg-exp")
    def fn():  # a valid config: other tests validate every registered experiment
        return get("experiments", "maml-sinusoid-tiny")()

    assert get("experiments", "test-reg-exp") is fn
