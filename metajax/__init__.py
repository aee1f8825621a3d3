"""metajax: meta-learning as pure functions of pytrees in JAX.

The public API is re-exported here by name; anything else is private.
"""

from metajax.config import apply_overrides as apply_overrides
from metajax.config import experiment_config as experiment_config
from metajax.core.adapt import AdaptResult as AdaptResult
from metajax.core.adapt import adapt as adapt
from metajax.core.batching import batch_tasks as batch_tasks
from metajax.core.learner import Learner as Learner
from metajax.core.losses import cross_entropy as cross_entropy
from metajax.core.losses import mse as mse
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
from metajax.data.source import TaskSource as TaskSource
from metajax.data.source import sample_tasks as sample_tasks
from metajax.errors import ConfigError as ConfigError
from metajax.errors import DataError as DataError
from metajax.errors import MetajaxError as MetajaxError
from metajax.errors import UnknownNameError as UnknownNameError
from metajax.learners.maml import fomaml as fomaml
from metajax.learners.maml import maml as maml
from metajax.learners.maml import reptile as reptile
from metajax.registry import register as register
from metajax.registry import register_experiment as register_experiment
from metajax.runner.load import TrainedRun as TrainedRun
from metajax.runner.load import load_run as load_run
from metajax.runner.train import run as run

__version__ = "0.1.0"

__all__ = [
    "AdaptResult",
    "ConfigError",
    "DataError",
    "InnerOptimizer",
    "Learner",
    "MetaState",
    "MetajaxError",
    "Model",
    "Split",
    "Task",
    "TaskSource",
    "TrainedRun",
    "UnknownNameError",
    "adapt",
    "apply_overrides",
    "batch_tasks",
    "cross_entropy",
    "experiment_config",
    "fixed",
    "fomaml",
    "from_flax",
    "head_only",
    "init_meta_state",
    "learned_lr",
    "load_run",
    "maml",
    "meta_step",
    "mse",
    "register",
    "register_experiment",
    "reptile",
    "run",
    "sample_tasks",
]
