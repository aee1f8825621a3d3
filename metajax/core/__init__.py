"""The pure functional core: tasks, models, the inner loop, batching over tasks, the outer step."""

from metajax.core.adapt import AdaptResult as AdaptResult
from metajax.core.adapt import adapt as adapt
from metajax.core.batching import batch_tasks as batch_tasks
from metajax.core.meta import MetaState as MetaState
from metajax.core.meta import init_meta_state as init_meta_state
from metajax.core.meta import meta_step as meta_step
from metajax.core.model import Model as Model
from metajax.core.model import from_flax as from_flax
from metajax.core.optim import InnerOptimizer as InnerOptimizer
from metajax.core.optim import fixed as fixed
from metajax.core.optim import head_only as head_only
from metajax.core.optim import learned_lr as learned_lr
from metajax.core.tasks import Split as Split
from metajax.core.tasks import Task as Task

__all__ = [
    "AdaptResult",
    "InnerOptimizer",
    "MetaState",
    "Model",
    "Split",
    "Task",
    "adapt",
    "batch_tasks",
    "fixed",
    "from_flax",
    "head_only",
    "init_meta_state",
    "learned_lr",
    "meta_step",
]
