"""Registers the built-in components under the names configs use.

Each registered function takes the config values of its component as
keyword arguments, so the accepted config keys are exactly its parameters.
Learners also receive the model and the loss function positionally.
"""

from __future__ import annotations

import inspect
from typing import Any

import optax

from metajax.core.losses import LossFn
from metajax.core.model import Model
from metajax.core.optim import InnerOptimizer, fixed, head_only, learned_lr
from metajax.data.cifarfs import cifarfs, fc100
from metajax.data.miniimagenet import miniimagenet
from metajax.data.omniglot import omniglot
from metajax.data.sinusoid import sinusoid
from metajax.data.tieredimagenet import tieredimagenet
from metajax.errors import ConfigError, close_matches
from metajax.learners import maml as maml_lib
from metajax.learners.matching import matching
from metajax.learners.metaoptnet import metaoptnet
from metajax.learners.protonet import protonet
from metajax.learners.r2d2 import r2d2
from metajax.models.conv4 import conv4, conv4_embedding
from metajax.models.mlp import mlp
from metajax.models.resnet12 import resnet12, resnet12_embedding
from metajax.registry import get, register

# ---- learning-rate schedules: lr is a number or {"schedule": NAME, ...optax arguments}


def _piecewise(init_value: float, boundaries_and_scales: dict) -> optax.Schedule:
    """``optax.piecewise_constant_schedule`` with JSON's string keys read as step numbers."""
    try:
        scales = {int(step): float(scale) for step, scale in boundaries_and_scales.items()}
    except (AttributeError, TypeError, ValueError):
        raise TypeError(
            f"boundaries_and_scales must map steps to scales, e.g. {{'20000': 0.1}}, got {boundaries_and_scales!r}"
        ) from None
    return optax.piecewise_constant_schedule(init_value, scales)


SCHEDULES = {
    "constant": optax.constant_schedule,  # value
    "piecewise": _piecewise,  # init_value, boundaries_and_scales {step: factor}, factors multiply in turn
    "linear": optax.linear_schedule,  # init_value, end_value, transition_steps
    "exponential": optax.exponential_decay,  # init_value, transition_steps, decay_rate, staircase
    "cosine": optax.cosine_decay_schedule,  # init_value, decay_steps, alpha
    "warmup_cosine": optax.warmup_cosine_decay_schedule,  # init_value, peak_value, warmup_steps, decay_steps
}


def make_schedule(lr: float | dict) -> float | optax.Schedule:
    """A number, or an optax schedule from ``{"schedule": name, **arguments}``.

    Example: ProtoNets' "halve every 2000 episodes" is
    ``{"schedule": "exponential", "init_value": 1e-3, "transition_steps": 2000, "decay_rate": 0.5, "staircase": true}``.
    The step count is the optimizer's own: meta-steps for the outer optimizer, inner steps for an inner one.
    """
    if not isinstance(lr, dict):
        return lr
    spec = dict(lr)
    name = spec.pop("schedule", None)
    if name not in SCHEDULES:
        raise ConfigError(
            f"learning-rate schedule {name!r} is unknown{close_matches(str(name), SCHEDULES)} Use one of "
            f"{', '.join(SCHEDULES)} as lr.schedule, or a number."
        )
    factory = SCHEDULES[name]
    params = inspect.signature(factory).parameters
    for key in spec:
        if key not in params:
            raise ConfigError(
                f"lr schedule {name!r} has no argument {key!r}{close_matches(key, params)} Its arguments: "
                f"{', '.join(params)}."
            )
    try:
        return factory(**spec)
    except TypeError as e:
        raise ConfigError(f"lr schedule {name!r}: {e}; its arguments: {', '.join(params)}.") from None


# ---- optimizers: config {name, lr, ...} -> optax.GradientTransformation


@register("optimizers", "sgd")
def _sgd(
    lr: float | dict, momentum: float | None = None, nesterov: bool = False, weight_decay: float = 0.0
) -> optax.GradientTransformation:
    # weight_decay as in torch.optim.SGD: weight_decay * params is added to the gradient before momentum.
    if not isinstance(weight_decay, (int, float)) or weight_decay < 0:
        raise ValueError(
            f"sgd: weight_decay must be a number >= 0, got {weight_decay!r} (weight_decay of the optimizer)."
        )
    sgd = optax.sgd(make_schedule(lr), momentum=momentum, nesterov=nesterov)
    return optax.chain(optax.add_decayed_weights(weight_decay), sgd) if weight_decay else sgd


@register("optimizers", "adam")
def _adam(lr: float | dict, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, eps_root: float = 1e-12):
    # eps_root > 0 keeps d sqrt(nu)/d nu finite where a gradient entry is exactly
    # zero; with optax's default 0 the meta-gradient through inner Adam is NaN.
    return optax.adam(make_schedule(lr), b1=b1, b2=b2, eps=eps, eps_root=eps_root)


@register("optimizers", "adamw")
def _adamw(
    lr: float | dict,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 1e-12,
    weight_decay: float = 1e-4,
):
    return optax.adamw(make_schedule(lr), b1=b1, b2=b2, eps=eps, eps_root=eps_root, weight_decay=weight_decay)


@register("optimizers", "rmsprop")
def _rmsprop(lr: float | dict, decay: float = 0.9, eps: float = 1e-8, momentum: float | None = None):
    return optax.rmsprop(make_schedule(lr), decay=decay, eps=eps, momentum=momentum)


def make_optimizer(cfg: dict[str, Any]) -> optax.GradientTransformation:
    """Builds an optax optimizer from ``{"name": ..., **hyperparameters}``."""
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise ConfigError(
            f"an optimizer config must be a dict with a 'name' key, got {cfg!r}; e.g. {{'name': 'sgd', 'lr': 0.01}}."
        )
    kwargs = {k: v for k, v in cfg.items() if k != "name"}
    return get("optimizers", cfg["name"])(**kwargs)


# ---- learners: (model, loss, **config) -> Learner


@register("learners", "maml")
def _maml(
    model: Model, loss: LossFn, *, inner_opt: dict, inner_steps: int = 1, first_order: bool = False, remat: bool = False
):
    return maml_lib.maml(
        model, loss, fixed(make_optimizer(inner_opt)), inner_steps=inner_steps, first_order=first_order, remat=remat
    )


@register("learners", "fomaml")
def _fomaml(model: Model, loss: LossFn, *, inner_opt: dict, inner_steps: int = 1, remat: bool = False):
    return maml_lib.maml(
        model, loss, fixed(make_optimizer(inner_opt)), inner_steps=inner_steps, first_order=True, remat=remat
    )


def _learned_lr(inner_opt: dict) -> InnerOptimizer:
    if not isinstance(inner_opt.get("lr"), (int, float)):
        raise ConfigError(
            "metasgd: learner.inner_opt.lr must be a number, the initial per-parameter learning rate "
            f"(got {inner_opt.get('lr')!r}); schedules do not apply to learned rates."
        )
    return learned_lr(make_optimizer({**inner_opt, "lr": 1.0}), inner_opt["lr"])


@register("learners", "metasgd")
def _metasgd(
    model: Model, loss: LossFn, *, inner_opt: dict, inner_steps: int = 1, first_order: bool = False, remat: bool = False
):
    return maml_lib.maml(
        model, loss, _learned_lr(inner_opt), inner_steps=inner_steps, first_order=first_order, remat=remat
    )


@register("learners", "anil")
def _anil(
    model: Model,
    loss: LossFn,
    *,
    inner_opt: dict,
    inner_steps: int = 1,
    first_order: bool = False,
    head: str = "head",
    remat: bool = False,
):
    inner = head_only(fixed(make_optimizer(inner_opt)), head)
    return maml_lib.maml(model, loss, inner, inner_steps=inner_steps, first_order=first_order, remat=remat)


@register("learners", "reptile")
def _reptile(model: Model, loss: LossFn, *, inner_opt: dict, inner_steps: int = 1, remat: bool = False):
    return maml_lib.reptile(model, loss, fixed(make_optimizer(inner_opt)), inner_steps=inner_steps, remat=remat)


register("learners", "protonet")(protonet)
register("learners", "matching")(matching)
register("learners", "r2d2")(r2d2)
register("learners", "metaoptnet")(metaoptnet)

# ---- models: (out_features, **config) -> Model

register("models", "mlp")(mlp)
register("models", "conv4")(conv4)
register("models", "conv4-embedding")(conv4_embedding)
register("models", "resnet12")(resnet12)
register("models", "resnet12-embedding")(resnet12_embedding)

# ---- datasets: (**config) -> TaskSource

register("datasets", "sinusoid")(sinusoid)
register("datasets", "omniglot")(omniglot)
register("datasets", "miniimagenet")(miniimagenet)
register("datasets", "tieredimagenet")(tieredimagenet)
register("datasets", "cifarfs")(cifarfs)
register("datasets", "fc100")(fc100)
