from __future__ import annotations

import numpy as np
import pytest
import torch

from ratiowatch.arrays import as_numpy, is_tensor, validate_inputs
from ratiowatch.errors import InvalidArgumentError, InvalidTypeError, RatiowatchError
from ratiowatch.stats import compute_step_partials


def test_errors_are_builtin_subclasses() -> None:
    assert issubclass(InvalidArgumentError, ValueError)
    assert issubclass(InvalidTypeError, TypeError)
    assert issubclass(InvalidArgumentError, RatiowatchError)
    assert issubclass(InvalidTypeError, RatiowatchError)


def test_mask_shape_mismatch_names_both_shapes() -> None:
    logp = np.zeros((8, 512), dtype=np.float32)
    with pytest.raises(InvalidArgumentError) as raised:
        validate_inputs(logp=logp, logp_old=logp, mask=np.ones((8, 511), dtype=bool))
    assert str(raised.value) == "mask has shape (8, 511), logp has shape (8, 512)"


def test_logprob_shape_mismatch_names_the_argument() -> None:
    with pytest.raises(InvalidArgumentError, match=r"^logp_old has shape \(4,\), logp has shape"):
        compute_step_partials(logp=np.zeros(3), logp_old=np.zeros(4))


def test_integer_logprobs_are_a_type_error() -> None:
    with pytest.raises(InvalidTypeError) as raised:
        validate_inputs(logp=np.zeros((2, 3), dtype=np.int64))
    assert str(raised.value) == (
        "logp has integer dtype int64; log-probabilities must be floating point"
    )


def test_integer_tensor_dtype_is_named_without_torch_prefix() -> None:
    with pytest.raises(InvalidTypeError, match="logp_behavior has integer dtype int32"):
        validate_inputs(logp=torch.zeros(3), logp_behavior=torch.zeros(3, dtype=torch.int32))


def test_float_mask_is_rejected() -> None:
    with pytest.raises(InvalidTypeError) as raised:
        validate_inputs(logp=np.zeros(3), mask=np.ones(3, dtype=np.float32))
    assert str(raised.value) == "mask has dtype float32; expected a boolean mask"


def test_non_array_is_named() -> None:
    with pytest.raises(InvalidTypeError, match="logp_old must be a numpy array or a torch tensor"):
        validate_inputs(logp=np.zeros(3), logp_old=[0.0, 0.0, 0.0])


def test_three_dimensional_input_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match=r"logp has shape \(2, 3, 4\); expected"):
        validate_inputs(logp=np.zeros((2, 3, 4)))


@pytest.mark.parametrize("shape", [(8, 16), (8,)])
def test_advantages_per_token_or_per_sequence(shape: tuple[int, ...]) -> None:
    arrays = validate_inputs(logp=np.zeros((8, 16)), advantages=np.zeros(shape))
    assert arrays.shape == (8, 16)


def test_advantages_of_other_shape_are_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        validate_inputs(logp=np.zeros((8, 16)), advantages=np.zeros(16))
    assert str(raised.value) == (
        "advantages has shape (16,), logp has shape (8, 16); expected (8, 16) or (8,)"
    )


def test_complex_advantages_are_rejected() -> None:
    with pytest.raises(InvalidTypeError, match="advantages has dtype complex128"):
        validate_inputs(logp=np.zeros(3), advantages=np.zeros(3, dtype=complex))


def test_tensors_on_different_devices_are_named() -> None:
    meta = torch.zeros(3, device="meta")
    with pytest.raises(InvalidArgumentError) as raised:
        validate_inputs(logp=torch.zeros(3), logp_old=meta)
    assert str(raised.value) == "logp_old is on meta, logp is on cpu"


def test_numpy_arrays_join_the_tensors_device() -> None:
    arrays = validate_inputs(logp=torch.zeros(2, 3), mask=np.ones((2, 3), dtype=bool))
    assert arrays.device == "cpu"
    assert is_tensor(arrays.get("mask"))


def test_nan_and_inf_are_data_not_errors() -> None:
    logp = np.array([np.nan, np.inf, -np.inf, 0.0])
    validate_inputs(logp=logp, logp_old=np.zeros(4))


def test_validation_happens_before_any_family_is_computed() -> None:
    with pytest.raises(InvalidTypeError, match="mask"):
        compute_step_partials(
            logp=np.zeros(4), logp_old=np.zeros(4), mask=np.zeros(4, dtype=np.int8)
        )


def test_bfloat16_is_widened_exactly() -> None:
    tensor = torch.tensor([0.1, -3.7, 1e30], dtype=torch.bfloat16)
    widened = as_numpy(tensor)
    assert widened.dtype == np.float32
    assert widened.tolist() == tensor.float().tolist()


def test_tensors_are_recognised_without_torch_attributes_on_numpy() -> None:
    assert is_tensor(torch.zeros(1))
    assert not is_tensor(np.zeros(1))
    assert not is_tensor(1.0)
