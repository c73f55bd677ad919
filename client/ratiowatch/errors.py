"""Exceptions ratiowatch raises into the caller.

Only invalid arguments ever reach the trainer; everything else is contained and counted. Each error
also derives from the builtin a caller would expect, so ``except ValueError`` keeps working::

    Exception
    └── RatiowatchError
        ├── InvalidArgumentError (also ValueError): a bad value or shape
        └── InvalidTypeError (also TypeError): a wrong type or dtype
"""

from __future__ import annotations

__all__ = ["InvalidArgumentError", "InvalidTypeError", "RatiowatchError"]


class RatiowatchError(Exception):
    """Base of every exception ratiowatch raises."""


class InvalidArgumentError(RatiowatchError, ValueError):
    """An argument has a bad value or shape; the message names the argument and the value."""


class InvalidTypeError(RatiowatchError, TypeError):
    """An argument has the wrong type or dtype; the message names the argument and the type."""
