"""The vLLM logits processor that stops a base segment at the exact step where entropy/margin trips
(and keeps both models from sampling ids past the shared tokenizer).

Imports vLLM, so only the vLLM engine loads it (`sampling.vllm_engine._make_llm`).
"""
from __future__ import annotations

from typing import Any

import torch
from vllm.v1.sample.logits_processor import LogitsProcessor

from sampling.torch_engine import step_statistics_tensor
from sampling.vllm_engine import STOP_KEY


def tokenizer_size(model_config: Any) -> int:
    """How many ids the model's tokenizer can produce (its vocabulary with added tokens)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_config.tokenizer, revision=getattr(model_config, "tokenizer_revision", None),
                                              trust_remote_code=getattr(model_config, "trust_remote_code", False))
    return len(tokenizer)


class PolicyStopProcessor(LogitsProcessor):
    """vLLM logits processor: stop a base segment at the first step whose statistic trips.

    A request opts in with `extra_args={"study_stop": (kind, threshold, sentinel)}`, kind being
    "entropy" (stop when entropy > threshold, nats) or "margin" (stop when top-1 − top-2
    probability < threshold). A tripping row has every logit but the sentinel's set to -inf; the
    sentinel is a stop token of the request. Non-tripping rows never sample the sentinel.
    """

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self.rows: dict[int, tuple[str, float, int]] = {}
        self.device = device
        self._tensors: tuple[torch.Tensor, ...] | None = None  # rebuilt only when the batch changes
        self.vocab_limit = tokenizer_size(vllm_config.model_config)

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        """Reject a malformed stop spec early."""
        spec = (sampling_params.extra_args or {}).get(STOP_KEY)
        if spec is not None and (len(spec) != 3 or spec[0] not in ("entropy", "margin")):
            raise ValueError(f"{STOP_KEY} must be (entropy|margin, threshold, sentinel), got {spec!r}")

    def is_argmax_invariant(self) -> bool:
        """It forces tokens, so it can change greedy choices."""
        return False

    def update_state(self, batch_update: Any) -> None:
        """Track which persistent-batch rows carry a stop spec."""
        if batch_update is None:
            return
        self._tensors = None
        for index in batch_update.removed:
            self.rows.pop(index, None)
        for index, params, _prompt, _output in batch_update.added:
            spec = (params.extra_args or {}).get(STOP_KEY) if params is not None else None
            if spec is None:
                self.rows.pop(index, None)
            else:
                self.rows[index] = (str(spec[0]), float(spec[1]), int(spec[2]))
        for first, second, direction in batch_update.moved:
            a, b = self.rows.pop(first, None), self.rows.pop(second, None)
            if a is not None:
                self.rows[second] = a
            if b is not None and direction.name == "SWAP":
                self.rows[first] = b

    def _batch_tensors(self) -> tuple[torch.Tensor, ...]:
        """Row indices, thresholds, sentinels and entropy-vs-margin flags of the opted-in rows."""
        if self._tensors is None:
            rows = sorted(self.rows.items())
            self._tensors = (
                torch.tensor([i for i, _ in rows], dtype=torch.long, device=self.device),
                torch.tensor([spec[1] for _, spec in rows], dtype=torch.float64, device=self.device),
                torch.tensor([spec[2] for _, spec in rows], dtype=torch.long, device=self.device),
                torch.tensor([spec[0] == "entropy" for _, spec in rows], device=self.device),
            )
        return self._tensors

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Mask ids past the tokenizer; force the sentinel where the statistic trips, mask it elsewhere.

        The statistics are those of the raw distribution (as in the torch engine); the ids past the
        tokenizer (embedding padding rows, e.g. Qwen2.5's) are never sampled, since the other model
        of the pair may not be able to read them.
        """
        if self.rows:
            index, thresholds, sentinels, is_entropy = self._batch_tensors()
            entropy, margin = step_statistics_tensor(logits[index])
        if self.vocab_limit < logits.shape[-1]:
            logits[:, self.vocab_limit:] = float("-inf")
        if not self.rows:
            return logits
        trips = torch.where(is_entropy, entropy > thresholds, margin < thresholds)
        logits[index, sentinels] = float("-inf")
        if bool(trips.any()):
            tripped, tripped_sentinels = index[trips], sentinels[trips]
            logits[tripped] = float("-inf")
            logits[tripped, tripped_sentinels] = 0.0
        return logits
