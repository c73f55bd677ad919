"""Validation of the arrays a trainer hands to ``log``, for numpy and torch alike.

``log`` may raise only on invalid arguments, and must do so before anything is queued, with a
message naming the argument and the shapes; this module is where that happens. torch is never
imported here unless the caller already passed a tensor (so it is already in ``sys.modules``).

numpy arrays mixed with torch tensors are accepted: they are moved to the tensors' device, since a
mask built on the host next to log-probs on the GPU is common and harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ratiowatch.errors import InvalidArgumentError, InvalidTypeError

__all__ = ["StepArrays", "as_numpy", "is_tensor", "validate_inputs"]

# numpy dtype kinds accepted per argument; every other argument is a floating-point log-prob array
_ACCEPTED_KINDS = {"mask": "b", "advantages": "fiu"}


@dataclass(frozen=True)
class StepArrays:
    """Validated arrays of one call: all numpy, or all torch tensors on ``device``.

    Every array but ``advantages`` has ``shape``; advantages have ``shape`` or ``shape[:1]``.
    """

    arrays: dict[str, Any]
    shape: tuple[int, ...] | None
    device: str | None  # None for numpy

    def get(self, name: str) -> Any:
        return self.arrays.get(name)


def is_tensor(obj: object) -> bool:
    """True for a torch tensor, decided without importing torch."""
    return type(obj).__module__.startswith("torch") and hasattr(obj, "device")


def as_numpy(value: Any) -> np.ndarray[Any, Any]:
    """A numpy view of an array or CPU tensor; bfloat16, which numpy lacks, is widened exactly."""
    if isinstance(value, np.ndarray):
        return value
    if str(value.dtype) == "torch.bfloat16":
        value = value.float()
    return value.detach().numpy()  # type: ignore[no-any-return]


def validate_inputs(**arrays: object) -> StepArrays:
    """Check types, dtypes, shapes and devices of the arrays that are not None.

    ``mask`` must be boolean, ``advantages`` real; every other name is a log-probability (or
    log-ratio) array and must be floating point. The first of those, in argument order, is the
    reference shape the others are compared with.
    """
    given = {name: value for name, value in arrays.items() if value is not None}
    for name, value in given.items():
        if not (isinstance(value, np.ndarray) or is_tensor(value)):
            raise InvalidTypeError(
                f"{name} must be a numpy array or a torch tensor; got {type(value).__name__}"
            )
        _check_dtype(name, value)
    shape = _check_shapes(given)
    device = _check_devices(given)
    if device is not None:
        given = {name: _to_device(value, device) for name, value in given.items()}
    return StepArrays(arrays=given, shape=shape, device=device)


def _dtype_kind(value: Any) -> str:
    """numpy's dtype kind letter, for an array or a tensor."""
    if isinstance(value, np.ndarray):
        return value.dtype.kind  # type: ignore[no-any-return]
    dtype = value.dtype
    if dtype.is_complex:
        return "c"
    if dtype.is_floating_point:
        return "f"
    return "b" if _dtype_name(value) == "bool" else "i"


def _dtype_name(value: Any) -> str:
    return str(value.dtype).removeprefix("torch.")


def _check_dtype(name: str, value: Any) -> None:
    kind = _dtype_kind(value)
    if kind in _ACCEPTED_KINDS.get(name, "f"):
        return
    dtype = _dtype_name(value)  # only now: formatting a dtype costs microseconds
    if name == "mask":
        raise InvalidTypeError(f"mask has dtype {dtype}; expected a boolean mask")
    if name == "advantages":
        raise InvalidTypeError(f"advantages has dtype {dtype}; expected real numbers")
    described = "integer dtype" if kind in "iu" else "dtype"
    raise InvalidTypeError(
        f"{name} has {described} {dtype}; log-probabilities must be floating point"
    )


def _check_shapes(given: dict[str, Any]) -> tuple[int, ...] | None:
    shaped = [n for n in given if n != "advantages"]
    shaped.sort(key=lambda n: n == "mask")
    if not shaped:
        return None
    reference = shaped[0]
    shape = tuple(given[reference].shape)
    if len(shape) not in (1, 2):
        raise InvalidArgumentError(f"{reference} has shape {shape}; expected [batch, seq] or [n]")
    for name in shaped[1:]:
        other = tuple(given[name].shape)
        if other != shape:
            raise InvalidArgumentError(f"{name} has shape {other}, {reference} has shape {shape}")
    if "advantages" in given:
        adv_shape = tuple(given["advantages"].shape)
        if adv_shape not in (shape, shape[:1]):
            raise InvalidArgumentError(
                f"advantages has shape {adv_shape}, {reference} has shape {shape}; "
                f"expected {shape} or {shape[:1]}"
            )
    return shape


def _check_devices(given: dict[str, Any]) -> str | None:
    """The tensors' common device, or None when every array is numpy."""
    devices = {name: str(value.device) for name, value in given.items() if is_tensor(value)}
    if not devices:
        return None
    first, device = next(iter(devices.items()))
    for name, other in devices.items():
        if other != device:
            raise InvalidArgumentError(f"{name} is on {other}, {first} is on {device}")
    return device


def _to_device(value: Any, device: str) -> Any:
    if is_tensor(value):
        return value.detach()
    import torch

    return torch.from_numpy(np.ascontiguousarray(value)).to(device)
