"""Errors raised on bad input, before anything is compiled.

Each message is one line naming the problem and the fix. The CLI prints
them without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MetajaxError(ValueError):
    """Base class: bad input that the user can fix."""


class ConfigError(MetajaxError):
    """A config key, value or type is wrong, or a run directory disagrees with it."""


class UnknownNameError(MetajaxError, KeyError):
    """A registry name (experiment, learner, dataset, model, optimizer) does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class DataError(MetajaxError):
    """A dataset file is missing or corrupt, or the data cannot satisfy a request."""


class NumericalError(MetajaxError):
    """Training produced a non-finite loss or gradient; the run stopped with its last good checkpoint kept."""


class CheckpointError(MetajaxError):
    """A checkpoint is corrupt, incomplete, or was written by a run with a different config."""


class CheckpointWarning(UserWarning):
    """A corrupt or incomplete checkpoint was skipped in favour of an older one."""


def close_matches(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """A ``"; did you mean 'x' or 'y'?"`` suffix, or ``""`` when nothing is close."""
    matches = difflib.get_close_matches(str(name), list(candidates), n=n, cutoff=0.5)
    if not matches:
        return ""
    return "; did you mean " + " or ".join(repr(m) for m in matches) + "?"
