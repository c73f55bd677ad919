"""``ratiowatch demo``: the service plus a small but real RL loop that goes unstable on purpose.

The loop is GRPO-style clipped policy gradient on a token task: a softmax policy over ``VOCAB``
tokens at each of ``LENGTH`` positions, conditioned on one of ``PROMPTS`` prompts, rewarded for
matching a hidden target sequence; advantages are group-normalised over samples of one prompt.
Rollouts come from a separate "engine" copy of the weights (as with vLLM beside the trainer), with
a small numerical mismatch. At ``unstable_at`` the engine stops receiving weight updates: the
behaviour policy goes stale, the mismatch ratio grows a heavy tail, and the untruncated importance
weights make the gradient spike. ratiowatch sees it in the ratio statistics and raises alerts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ratiowatch.run import Run

PROMPTS, LENGTH, VOCAB = 8, 16, 32


@dataclass(frozen=True)
class DemoConfig:
    steps: int = 400
    unstable_at: int = 250
    samples_per_prompt: int = 8
    ppo_epochs: int = 2
    micro_batches: int = 2
    lr: float = 20.0
    engine_noise: float = 0.02
    drift_every: int = 2
    delay: float = 0.1
    seed: int = 0


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class TokenTask:
    """Prompts, hidden targets, sampling and rewards; the policy lives in ``weights``."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.targets = rng.integers(0, VOCAB, size=(PROMPTS, LENGTH))

    def sample(self, weights: np.ndarray, prompts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tokens [n, LENGTH] drawn from the policy and a mask of each sequence's real length."""
        probs = np.exp(_log_softmax(weights[prompts]))
        cumulative = probs.cumsum(axis=-1)
        draws = self.rng.random(size=(*prompts.shape, LENGTH, 1))
        tokens = np.minimum((draws > cumulative).sum(axis=-1), VOCAB - 1)
        lengths = self.rng.integers(LENGTH // 2, LENGTH + 1, size=prompts.shape)
        mask = np.arange(LENGTH)[None, :] < lengths[:, None]
        return tokens, mask

    def drift(self) -> None:
        """The task keeps moving (one target token changes), so the policy never stops learning."""
        prompt, position = self.rng.integers(0, PROMPTS), self.rng.integers(0, LENGTH)
        self.targets[prompt, position] = self.rng.integers(0, VOCAB)

    def reward(self, prompts: np.ndarray, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        hits = (tokens == self.targets[prompts]) & mask
        return hits.sum(axis=1) / mask.sum(axis=1)


def token_logp(weights: np.ndarray, prompts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    log_probs = _log_softmax(weights[prompts])
    return np.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]


def surrogate_gradient(
    weights: np.ndarray,
    prompts: np.ndarray,
    tokens: np.ndarray,
    mask: np.ndarray,
    coefficient: np.ndarray,
) -> np.ndarray:
    """Gradient of sum(coefficient * logp) w.r.t. the logits: (onehot - softmax) * coefficient."""
    probs = np.exp(_log_softmax(weights[prompts]))
    grad_logits = -probs * coefficient[..., None]
    np.put_along_axis(
        grad_logits,
        tokens[..., None],
        np.take_along_axis(grad_logits, tokens[..., None], axis=-1) + coefficient[..., None],
        axis=-1,
    )
    grad = np.zeros_like(weights)
    np.add.at(grad, prompts, grad_logits * mask[..., None])
    return grad / max(int(mask.sum()), 1)


def train(run: Run, config: DemoConfig) -> None:
    """The training loop; logs through the public client API only."""
    rng = np.random.default_rng(config.seed)
    task = TokenTask(rng)
    weights = rng.normal(0.0, 0.1, size=(PROMPTS, LENGTH, VOCAB))
    engine_weights = weights.copy()
    eps_low, eps_high = run.clip
    for step in range(config.steps):
        if step < config.unstable_at:
            engine_weights = weights.copy()  # the rollout engine receives the new weights
        if step % config.drift_every == 0:
            task.drift()
        prompts = np.repeat(np.arange(PROMPTS), config.samples_per_prompt)
        tokens, mask = task.sample(engine_weights, prompts)
        rewards = task.reward(prompts, tokens, mask)
        grouped = rewards.reshape(PROMPTS, config.samples_per_prompt)
        advantages = (
            (grouped - grouped.mean(1, keepdims=True)) / (grouped.std(1, keepdims=True) + 1e-6)
        ).ravel()
        logp_behavior = token_logp(engine_weights, prompts, tokens)
        logp_behavior = logp_behavior + rng.normal(0.0, config.engine_noise, logp_behavior.shape)
        logp_old = token_logp(weights, prompts, tokens)
        for epoch in range(config.ppo_epochs):
            last_epoch = epoch == config.ppo_epochs - 1
            for part in np.array_split(rng.permutation(len(prompts)), config.micro_batches):
                p, t, m = prompts[part], tokens[part], mask[part]
                logp = token_logp(weights, p, t)
                ratio = np.exp(logp - logp_old[part])
                behaviour_weight = np.exp(logp_old[part] - logp_behavior[part])
                adv = np.broadcast_to(advantages[part, None], ratio.shape)
                unclipped = np.where(adv > 0, ratio < 1 + eps_high, ratio > 1 - eps_low)
                coefficient = behaviour_weight * ratio * adv * unclipped
                grad = surrogate_gradient(weights, p, t, m, coefficient)
                grad_norm = float(np.linalg.norm(grad))
                weights = weights + config.lr * grad
                if last_epoch:
                    run.log(
                        step,
                        logp=logp,
                        logp_old=logp_old[part],
                        logp_behavior=logp_behavior[part],
                        mask=m,
                        advantages=advantages[part],
                        grad_norm=grad_norm,
                        reward=float(rewards[part].mean()),
                        staleness=float(max(0, step - config.unstable_at + 1)),
                    )
        if config.delay:
            time.sleep(config.delay)
    run.flush(timeout=30)
