"""Sinusoid regression, the MAML paper's protocol (Finn et al., 2017, sec. 5.1).

MLP 40-40 ReLU, meta-batch 25 tasks, one inner SGD step with learning rate
0.01, outer Adam 1e-3, 70,000 meta-steps, K support and K query points.

Run the full protocol::

    metajax run maml-sinusoid

and a one-minute CPU version::

    metajax run maml-sinusoid --steps 2000

Published reference (MAML paper, Fig. 3 and appendix): 5-shot MSE after 1 /
5 / 10 test-time steps of about 0.67 / 0.38 / 0.35 (read from the figure).
The paper's 10-shot results are reported as curves only.
"""

from __future__ import annotations

from metajax import register_experiment

PAPER = "Finn, Abbeel, Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks. ICML 2017"


def sinusoid_config(learner: str, shots: int) -> dict:
    """The MAML-paper sinusoid protocol with the given learner and K."""
    return {
        "seed": 0,
        "steps": 70_000,
        "meta_batch_size": 25,
        "outer_opt": {"name": "adam", "lr": 1e-3},
        "data": {"name": "sinusoid", "shots": shots, "queries": shots},
        "model": {"name": "mlp", "hidden": [40, 40], "activation": "relu"},
        "learner": {"name": learner, "inner_steps": 1, "inner_opt": {"name": "sgd", "lr": 0.01}},
        "eval": {"every": 1000, "tasks": 100, "test_tasks": 600, "inner_steps": 10},
        "reference": {
            "paper": PAPER,
            "where": "Fig. 3 (MSE vs. gradient steps, K=5); values read from the figure",
            "metric": "test MSE after 1 / 5 / 10 inner steps, K=5",
            "values": {"1": 0.67, "5": 0.38, "10": 0.35} if shots == 5 else None,
        },
    }


for _learner in ("maml", "fomaml", "metasgd", "anil", "reptile"):
    for _shots, _suffix in ((10, ""), (5, "-5shot")):
        register_experiment(f"{_learner}-sinusoid{_suffix}")(
            lambda learner=_learner, shots=_shots: sinusoid_config(learner, shots)
        )


@register_experiment("maml-sinusoid-tiny")
def maml_sinusoid_tiny() -> dict:
    """A seconds-long CPU smoke run of maml-sinusoid, for tests."""
    config = sinusoid_config("maml", 10)
    config.update(steps=50, meta_batch_size=4)
    config["eval"] = {"every": 25, "tasks": 20, "test_tasks": 40, "inner_steps": 3}
    config["checkpoint"] = {"every": 25, "keep": 2}
    config["log_every"] = 10
    return config
