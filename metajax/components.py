"""Registers the built-in components under the names configs use.

Each registered function takes the config values of its component as
keyword arguments, so the accepted config keys are exactly its parameters.
Learners also receive the model and the loss function positionally.
"""

from __future__ import annotations

from typing import Any

import optax

from metajax.core.losses import LossFn
from metajax.core.model import Model
from metajax.core.optim import InnerOptimizer, fixed, head_only, learned_lr
from metajax.data import omniglot as _omniglot  # noqa: F401  (registers the "omniglot" dataset)
from metajax.data.sinusoid import sinusoid
from metajax.errors import ConfigError
from metajax.learners import maml as maml_lib
from metajax.learners.protonet import protonet
from metajax.learners import matching as _matching, r2d2 as _r2d2  # noqa: F401  (register "matching", "r2d2")
from metajax.models import resnet12 as _resnet12  # noqa: F401  (registers "resnet12", "resnet12-embedding")
from metajax.models.conv4 import conv4
from metajax.models.mlp import mlp
from metajax.registry import get, register

# ---- optimizers: config {name, lr, ...} -> optax.GradientTransformation


@register("optimizers", "sgd")
def _sgd(lr: float, momentum: float | None = None, nesterov: bool = False) -> optax.GradientTransformation:
    return optax.sgd(lr, momentum=momentum, nesterov=nesterov)


@register("optimizers", "adam")
def _adam(lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, eps_root: float = 1e-12):
    # eps_root > 0 keeps d sqrt(nu)/d nu finite where a gradient entry is exactly
    # zero; with optax's default 0 the meta-gradient through inner Adam is NaN.
    return optax.adam(lr, b1=b1, b2=b2, eps=eps, eps_root=eps_root)


@register("optimizers", "adamw")
def _adamw(
    lr: float,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 1e-12,
    weight_decay: float = 1e-4,
):
    return optax.adamw(lr, b1=b1, b2=b2, eps=eps, eps_root=eps_root, weight_decay=weight_decay)


@register("optimizers", "rmsprop")
def _rmsprop(lr: float, decay: float = 0.9, eps: float = 1e-8, momentum: float | None = None):
    return optax.rmsprop(lr, decay=decay, eps=eps, momentum=momentum)


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
    if "lr" not in inner_opt:
        raise ConfigError("metasgd: learner.inner_opt.lr (the initial per-parameter learning rate) is required.")
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

# ---- models: (out_features, **config) -> Model

register("models", "mlp")(mlp)
register("models", "conv4")(conv4)

# ---- datasets: (**config) -> TaskSource

register("datasets", "sinusoid")(sinusoid)
