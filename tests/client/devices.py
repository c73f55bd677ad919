"""The torch devices that the device kernels (``stats_torch``, ``khat.top_torch``) are tested on.

The CPU always; CUDA where the machine has a GPU (CI has none, so there those cases are skipped
and say why; a lent GPU machine runs them).
"""

from __future__ import annotations

import pytest
import torch

TORCH_DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            not torch.cuda.is_available(),
            reason="no CUDA device on this machine: the device kernels ran on CPU tensors only",
        ),
    ),
]
