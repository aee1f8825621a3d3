"""The inner loop: a ``lax.scan`` of optax updates, differentiable end to end."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Optional, Union

import jax
import optax

from metajax.typing import Array, ModelState, Params, PyTree

InnerLossFn = Callable[[Params, ModelState], tuple[Array, ModelState]]

# Remat policies for the inner step: what the backward pass keeps of each
# step's forward computation (the scan carry, i.e. params and optimizer state,
# is always kept). ``True`` is ``"full"``.
REMAT_POLICIES: dict[str, Optional[Callable[..., bool]]] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def remat_policy(remat: Union[bool, str]) -> tuple[bool, Optional[Callable[..., bool]]]:
    """``(use_checkpoint, policy)`` for a ``remat`` value: a bool or a :data:`REMAT_POLICIES` name.

    Raises:
      ValueError: ``remat`` is neither.
    """
    if remat is False or remat is None:
        return False, None
    if remat is True:
        return True, REMAT_POLICIES["full"]
    if isinstance(remat, str) and remat in REMAT_POLICIES:
        return remat != "none", REMAT_POLICIES[remat]
    raise ValueError(f"remat={remat!r}; use a bool or one of {sorted(REMAT_POLICIES)} (e.g. --set learner.remat=full).")


class AdaptResult(NamedTuple):
    """What :func:`adapt` returns.

    Attributes:
      params: the adapted parameters.
      model_state: the model state after the last inner step.
      losses: inner (support) loss before each update, shape ``(steps,)``.
      observations: ``observe(params, state)`` before each step and after the
        last one, stacked to a leading ``(steps + 1,)`` axis; ``None`` when no
        ``observe`` was given.
    """

    params: Params
    model_state: ModelState
    losses: Array
    observations: Optional[PyTree]


def adapt(
    loss_fn: InnerLossFn,
    params: Params,
    model_state: ModelState,
    inner_opt: optax.GradientTransformation,
    steps: int,
    *,
    first_order: bool = False,
    remat: Union[bool, str] = False,
    observe: Optional[Callable[[Params, ModelState], PyTree]] = None,
) -> AdaptResult:
    """Runs ``steps`` updates of ``inner_opt`` on ``loss_fn`` starting from ``params``.

    Gradients flow through every ``update`` and ``apply_updates``, so the
    result is differentiable w.r.t. ``params`` and anything ``inner_opt`` was
    built from (second-order MAML). ``first_order=True`` stops gradients
    through the inner gradients only, which drops the Hessian term and leaves
    ``d adapted / d params = I`` for optimizers whose update depends on
    gradients alone.

    Args:
      loss_fn: ``loss_fn(params, model_state) -> (loss, model_state)``, the
        support loss of one task.
      params: starting parameters.
      model_state: starting model state (``{}`` for stateless models).
      inner_opt: any optax transformation; its state is initialised here.
      steps: number of inner steps (static).
      first_order: drop second-order terms via ``stop_gradient``.
      remat: recompute each inner step in the backward pass
        (``jax.checkpoint``) instead of storing its activations. ``True`` or
        ``"full"`` keeps only the scan carry per step; ``"dots"`` /
        ``"dots_no_batch"`` also keep matrix products; ``False`` / ``"none"``
        keep everything. With ``"full"``, memory of second-order MAML grows
        with ``steps`` by about one copy of params and optimizer state per
        step instead of all of a step's activations.
      observe: optional ``observe(params, model_state) -> pytree`` evaluated
        before each step and after the last one (e.g. query metrics).

    Returns:
      An :class:`AdaptResult`.
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"adapt: steps must be a non-negative int, got {steps!r}.")
    use_remat, policy = remat_policy(remat)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(carry, _):
        params, opt_state, state = carry
        seen = observe(params, state) if observe is not None else None
        (loss, state), grads = grad_fn(params, state)
        if first_order:
            grads = jax.lax.stop_gradient(grads)
        updates, opt_state = inner_opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state, state), (loss, seen)

    if use_remat:
        step = jax.checkpoint(step, policy=policy)
    carry = (params, inner_opt.init(params), model_state)
    (params, _, model_state), (losses, seen) = jax.lax.scan(step, carry, None, length=steps)
    observations = None
    if observe is not None:
        last = observe(params, model_state)
        if steps == 0:
            observations = jax.tree_util.tree_map(lambda leaf: leaf[None], last)
        else:
            observations = jax.tree_util.tree_map(
                lambda history, leaf: jax.numpy.concatenate([history, leaf[None]]), seen, last
            )
    return AdaptResult(params, model_state, losses, observations)
