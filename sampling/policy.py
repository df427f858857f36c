"""Decoding policies: when does the oracle take over for k tokens? Pure logic, no model.

A policy sees, at every step where the base would generate, the generated-token position and the
base's next-token statistics (entropy, top-1 minus top-2 probability). It answers whether the oracle
takes the next k tokens instead. Engines ask it; it never touches a model.

- `base`: never (c = 0).  `oracle`: always (c = infinity; every token is the oracle's).
- `random(c, k)`: c intervention positions drawn uniformly without replacement from
  [0, ref_length) of the generated sequence (ref_length is a config value, default 100; the toy
  experiments set 50, about the toy solutions' mean length). An intervention fires at the first base step
  whose position is >= a drawn position, one per drawn position, so overlapping draws run back to
  back. Draws past the end of a sample are simply unused; `interventions` records the used ones.
- `entropy(tau, k, max_c)`: fire when the base's next-token entropy (nats, full distribution at
  temperature 1, before sampling) exceeds tau, at most max_c times per sample.
- `margin(delta, k, max_c)`: fire when top-1 minus top-2 probability is below delta, at most max_c times.
- `judge(k, alpha, every, max_c)`: the base writes freely; after every `every` base tokens (and
  when it stops) the oracle scores that segment in one prefill. At the first base token to which
  the oracle gives probability below alpha, the sample is rolled back to just before that token
  and the oracle writes k tokens; at most max_c rollbacks. The rolled-back base tokens are counted
  in `discarded` (and in `base_decode`: they were computed), the judging in `oracle_prefill`.
  With `head`, the judge is instead a linear head on the oracle's final hidden state after each
  base token (`study toy train-judge`), and a token is rejected when its mistake probability
  exceeds alpha.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

POLICY_NAMES = ("base", "oracle", "random", "entropy", "margin", "judge")


@dataclass(frozen=True)
class PolicySpec:
    """A policy and its parameters (part of a sampling config)."""

    name: str
    k: int = 0
    c: int = 0
    tau: float | None = None
    delta: float | None = None
    max_c: int | None = None
    ref_length: int = 100
    alpha: float | None = None
    every: int = 8
    head: str | None = None  # judge: a linear mistake head on the oracle's hidden states (path, or "toy")

    def __post_init__(self) -> None:
        if self.name not in POLICY_NAMES:
            raise ValueError(f"unknown policy {self.name!r}: choose one of {', '.join(POLICY_NAMES)}")
        for key in ("tau", "delta", "alpha"):
            value = getattr(self, key)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"policy {self.name!r}: {key} must be a finite number, got {value}")
        if self.name in ("random", "entropy", "margin", "judge") and self.k < 1:
            raise ValueError(f"policy {self.name!r} needs k >= 1 oracle tokens per intervention, got k={self.k}")
        if self.name == "random" and self.ref_length < 1:
            raise ValueError(f"random policy needs ref_length >= 1 (positions are drawn in [0, ref_length)), got {self.ref_length}")
        if self.name == "random" and (self.c < 1 or self.c > self.ref_length):
            raise ValueError(f"random policy needs 1 <= c <= ref_length ({self.ref_length}), got c={self.c}")
        if self.name == "entropy" and (self.tau is None or self.tau < 0):
            raise ValueError("entropy policy needs a threshold tau >= 0 (nats)")
        if self.name == "margin" and (self.delta is None or not 0 < self.delta <= 1):
            raise ValueError("margin policy needs a threshold delta in (0, 1]")
        if self.name == "judge" and (self.alpha is None or not 0 < self.alpha < 1):
            raise ValueError(f"judge policy needs alpha in (0, 1) (oracle probability threshold), got alpha={self.alpha}")
        if self.name == "judge" and self.every < 1:
            raise ValueError(f"judge policy needs every >= 1 (base tokens per judged window), got every={self.every}")
        if self.name in ("entropy", "margin", "judge") and (self.max_c is None or self.max_c < 1):
            got = "it is missing" if self.max_c is None else f"got max_c={self.max_c}"
            raise ValueError(f"policy {self.name!r} needs max_c >= 1 (most interventions per sample); {got}")


@dataclass
class PolicyState:
    """Per-sample policy state: pending random positions and interventions used."""

    positions: list[int] = field(default_factory=list)
    used: int = 0


def start(spec: PolicySpec, sample_seed: int) -> PolicyState:
    """Fresh state for one sample (random positions drawn from the sample's own seed)."""
    if spec.name != "random":
        return PolicyState()
    rng = np.random.default_rng(sample_seed)
    positions = sorted(int(p) for p in rng.choice(spec.ref_length, size=spec.c, replace=False))
    return PolicyState(positions=positions)


def wants_oracle(spec: PolicySpec, state: PolicyState, position: int, entropy: float, margin: float) -> bool:
    """Should the oracle write the next k tokens, starting at generated position `position`?"""
    if spec.name == "base":
        return False
    if spec.name == "oracle":
        return True
    if spec.name == "judge":  # the judge intervenes by rollback after scoring a segment, never ahead
        return False
    if spec.name == "random":
        return bool(state.positions) and position >= state.positions[0]
    if state.used >= (spec.max_c or 0):
        return False
    if spec.name == "entropy":
        return entropy > spec.tau
    return margin < spec.delta


def record_intervention(spec: PolicySpec, state: PolicyState) -> None:
    """Book one intervention that starts now."""
    state.used += 1
    if spec.name == "random":
        state.positions.pop(0)


def judge_flags(spec: PolicySpec, state: PolicyState, scores: list[float]) -> int | None:
    """Index of the first judged token the judge rejects (None: keep all).

    Scores are the oracle's probability of each token (rejected below alpha) or, with a head,
    each token's mistake probability (rejected above alpha).
    """
    if spec.name != "judge" or state.used >= (spec.max_c or 0):
        return None
    if spec.head:
        return next((i for i, p in enumerate(scores) if p > spec.alpha), None)
    return next((i for i, p in enumerate(scores) if p < spec.alpha), None)


def needs_base_stats(spec: PolicySpec) -> bool:
    """Whether the policy reads the base's step statistics (else the base need not run first)."""
    return spec.name in ("entropy", "margin")
