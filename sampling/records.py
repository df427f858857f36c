"""What goes into an engine (a sample request) and what comes out (a sample record)."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from sampling.policy import PolicySpec

PROVENANCE_BASE = 0
PROVENANCE_ORACLE = 1


MIN_TEMPERATURE = 1e-5  # the smallest temperature that samples (vLLM's _SAMPLING_EPS: below it, greedy)


@dataclass(frozen=True)
class SamplingParams:
    """How one model samples: temperature 0 means greedy; top_p in (0, 1]."""

    temperature: float = 1.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.temperature) or not math.isfinite(self.top_p):
            raise ValueError(f"temperature and top_p must be finite numbers, got {self.temperature} and {self.top_p}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if 0 < self.temperature < MIN_TEMPERATURE:  # logits / a subnormal temperature overflow to inf: NaN probabilities
            raise ValueError(f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE:g} (vLLM samples smaller ones "
                             f"greedily), got {self.temperature:g}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class GuidedConfig:
    """Everything that defines how one config's samples are drawn (the models are run-wide)."""

    policy: PolicySpec
    base: SamplingParams = SamplingParams()
    oracle: SamplingParams = SamplingParams()
    max_tokens: int = 256


@dataclass(frozen=True)
class SampleRequest:
    """One sample to draw: prompt token ids, config, and the sample's own seed."""

    config_id: str
    problem_id: str
    sample_index: int
    seed: int
    prompt_ids: tuple[int, ...]
    config: GuidedConfig


@dataclass
class SampleRecord:
    """One finished sample with provenance and per-model token accounting."""

    config_id: str
    problem_id: str
    sample_index: int
    seed: int
    token_ids: list[int] = field(default_factory=list)
    provenance: list[int] = field(default_factory=list)
    base_entropy: list[float] = field(default_factory=list)
    interventions: int = 0
    finish_reason: str = ""
    base_decode: int = 0
    base_prefill: int = 0
    oracle_decode: int = 0
    oracle_prefill: int = 0
    discarded: int = 0  # base tokens generated, then rolled back by a judge (counted in base_decode)
    text: str = ""


def derive_seed(run_seed: int, problem_id: str, config_id: str, sample_index: int) -> int:
    """A 63-bit per-sample seed from (run seed, problem, config, index), stable across machines."""
    key = f"{run_seed}\x00{problem_id}\x00{config_id}\x00{sample_index}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def uniforms(seeds: np.ndarray, positions: np.ndarray, stream: int) -> np.ndarray:
    """Counter-based U(0,1) draws: a pure function of (sample seed, position, stream) (splitmix64)."""
    with np.errstate(over="ignore"):
        x = seeds.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        x ^= positions.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9) + np.uint64(stream + 1)
        for _ in range(2):
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            x = x ^ (x >> np.uint64(31))
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)
