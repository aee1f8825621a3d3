"""Built-in experiments, installed as ``metajax.experiments``.

Each module registers plain-Python configs with
:func:`metajax.register_experiment`. Copy one to start your own and run it
with ``metajax run NAME --module path/to/your_module.py``.
"""

from . import (
    miniimagenet,  # noqa: F401
    omniglot,  # noqa: F401
    sinusoid,  # noqa: F401
)
