"""ratiowatch: importance-ratio monitoring for off-policy and LLM reinforcement learning.

    run = ratiowatch.init(project="grpo-math", name="qwen-0.5b")
    run.log(step, logp=new_logp, logp_old=old_logp, mask=mask, grad_norm=gn)

Importing this package imports numpy and the standard library only; torch is imported when a
tensor arrives.
"""

from __future__ import annotations

from ratiowatch.errors import InvalidArgumentError, InvalidTypeError, RatiowatchError
from ratiowatch.run import Run, init

__all__ = ["InvalidArgumentError", "InvalidTypeError", "RatiowatchError", "Run", "init"]
__version__ = "0.1.0"
