"""Type aliases shared across metajax.

Everything in metajax is a pure function of pytrees; these aliases only name
what role a pytree plays.
"""

from __future__ import annotations

from typing import Any

import jax

Array = jax.Array
PyTree = Any
Params = PyTree  # model weights, e.g. a Flax ``params`` collection
MetaParams = PyTree  # what the outer loop learns: params and inner-optimizer meta-parameters
ModelState = PyTree  # what is not meta-learned, e.g. batch-norm statistics; ``{}`` if none
PRNGKey = jax.Array
Metrics = dict[str, Any]
Config = dict[str, Any]

__all__ = ["Array", "Config", "MetaParams", "Metrics", "ModelState", "PRNGKey", "Params", "PyTree"]
