"""User-facing errors: one line that names the problem and the fix.

The CLI prints an `EchoesError` as a single line on stderr and exits with code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EchoesError(Exception):
    """Bad input from the user (unknown name, malformed file, wrong type...)."""


class SkippedFileWarning(UserWarning):
    """An input file left out (corrupt, unreadable); the run goes on without it and counts it."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or the list of choices."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if close:
        return f"did you mean '{close[0]}'?"
    return "choose one of: " + ", ".join(choices)


def unknown(kind: str, name: str, choices: Iterable[str]) -> EchoesError:
    """An error for an unknown model/source/learner/key, suggesting the closest name."""
    return EchoesError(f"unknown {kind} '{name}' — {did_you_mean(name, choices)}")
