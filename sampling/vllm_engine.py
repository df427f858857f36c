"""The vLLM engine: the torch engine's guided semantics, run in rounds on two vLLM `LLM` instances.

All active samples of a block advance together, one round at a time:

1. **Base segment.** Every sample whose base is writing gets one request: its whole sequence so
   far as token ids (`TokensPrompt`; prefix caching means only the unseen suffix is computed) and
   `max_tokens` up to the policy's next decision point (the next `random` position, the next
   `judge` checkpoint, or the end). For `entropy`/`margin` the segment runs open-ended and a
   logits processor (`PolicyStopProcessor`) stops it at the exact triggering step: it computes the
   base's full-distribution entropy / top-1 − top-2 margin on the raw logits (T = 1, the same
   statistic as the torch engine) and, where the threshold trips, forces a sentinel token that is a
   stop token. The sentinel is masked out everywhere else, so it is never sampled (the sentinel is
   the pad or unk token, whose probability is ~0). The forced step costs nothing extra: the torch
   engine runs the same forward to decide.
2. **Judge.** `judge` samples whose segment reached a checkpoint are scored by the oracle in one
   request with `prompt_logprobs=0` (the probability of each judged token); at the first token
   below alpha the sample is truncated and handed to the oracle. (vLLM does not reuse cached
   prefixes for prompt-logprob requests, so this recomputes the sequence: wall time, not booked
   tokens. The hidden-state judge head needs the oracle's hidden states, which vLLM does not
   return: it is refused here.)
3. **Oracle segment.** Samples in an intervention get one oracle request of `max_tokens = k`.

Token accounting mirrors the torch engine token for token (see docs/ARCHITECTURE.md): a model's
prefill is every token it had not seen that it did not write (the prompt at its first call).
Sampling uses vLLM's sampler with a per-request seed derived from (sample seed, position, model),
so a block is reproducible; draws differ from the torch engine's, so the two engines agree in
distribution (tests check pass@1, coverage and token counts), and exactly under greedy decoding.
`base_entropy` is recorded from the top `entropy_logprobs` logprobs (exact when that covers the
vocabulary; a lower bound otherwise, see `topk_entropy`).
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from sampling import policy as policies
from sampling.records import PROVENANCE_BASE, PROVENANCE_ORACLE, SampleRecord, SampleRequest

STOP_KEY = "study_stop"  # SamplingParams.extra_args key read by PolicyStopProcessor
DEFAULT_CPU_KV_CACHE_BYTES = 1 << 30
DEFAULT_GPU_MEMORY = {"base": 0.25, "oracle": 0.6}


class VllmEngineError(ValueError):
    """A request or option the vLLM engine cannot serve."""


def vllm_available() -> str | None:
    """None when vllm imports, else the reason it does not."""
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        return f"{type(exc).__name__}: {exc}"
    return None


def topk_entropy(logprobs: list[float]) -> float:
    """Entropy from the top-k logprobs of a distribution: exact when they cover it, else a lower bound.

    The missing mass r is charged as if spread over tokens each as likely as the k-th (the least
    entropy it can have): H ≈ -Σ p log p - r log p_k.
    """
    probs = [math.exp(lp) for lp in logprobs]
    entropy = -sum(p * lp for p, lp in zip(probs, logprobs) if p > 0)
    rest = max(0.0, 1.0 - sum(probs))
    if rest > 1e-12 and probs:
        entropy -= rest * min(logprobs)
    return entropy


def stop_ids(model_path: str, tokenizer: Any) -> set[int]:
    """End-of-sequence ids: the tokenizer's plus the model's generation_config (vLLM stops on all)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    try:
        from transformers import GenerationConfig

        configured = GenerationConfig.from_pretrained(model_path).eos_token_id
    except (OSError, ValueError):
        configured = None
    if configured is not None:
        ids |= set(configured) if isinstance(configured, (list, tuple)) else {configured}
    return {int(i) for i in ids}


def choose_sentinel(model_vocab_size: int, tokenizer: Any, eos_ids: set[int]) -> int:
    """A token id the base never needs: an embedding row past the tokenizer, else pad/unk/reserved."""
    if model_vocab_size > len(tokenizer):
        return model_vocab_size - 1
    candidates = [tokenizer.pad_token_id, tokenizer.unk_token_id]
    candidates += [i for t, i in sorted(tokenizer.get_added_vocab().items(), key=lambda kv: kv[1]) if "reserved" in t]
    for candidate in candidates:
        if candidate is not None and candidate not in eos_ids and candidate != tokenizer.bos_token_id:
            return int(candidate)
    raise VllmEngineError(
        "no token id is free to serve as the entropy/margin stop sentinel (no pad, unk or reserved token); "
        "set engine_options.sentinel_token_id to an id the base never emits"
    )


def segment_seed(sample_seed: int, position: int, stream: int) -> int:
    """Per-request vLLM seed for one segment: a pure function of (sample seed, position, model)."""
    key = f"{sample_seed}\x00{position}\x00{stream}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 2


@dataclass
class _Row:
    """Decoding state of one sample across rounds."""

    request: SampleRequest
    record: SampleRecord
    tokens: list[int]
    owner: list[int]  # -1 prompt, 0 base, 1 oracle
    state: policies.PolicyState
    filled: list[int] = field(default_factory=lambda: [0, 0])  # tokens each model has processed
    called: set[int] = field(default_factory=set)
    oracle_left: int = 0
    done: bool = False
    entropy: list[float] = field(default_factory=list)
    judged: int = 0

    @property
    def generated(self) -> int:
        """Tokens generated so far."""
        return len(self.tokens) - len(self.request.prompt_ids)

    @property
    def remaining(self) -> int:
        """Tokens left before max_tokens."""
        return self.request.config.max_tokens - self.generated


class VllmEngine:
    """Runs blocks of sample requests on a base/oracle pair of vLLM `LLM`s in rounds."""

    name = "vllm"

    def __init__(
        self, base_path: str, oracle_path: str | None, eos_ids: set[int], sentinel_id: int, vocab_size: int,
        max_model_len: int, options: dict[str, Any] | None = None, threads: int | None = None,
    ) -> None:
        options = dict(options or {})
        self.entropy_logprobs = int(options.pop("entropy_logprobs", 20))
        self.eos_ids, self.sentinel_id = set(eos_ids), sentinel_id
        self.max_model_len = max_model_len
        per_model = {role: dict(options.pop(role, {}) or {}) for role in ("base", "oracle")}
        self.base = _make_llm(base_path, "base", {**options, **per_model["base"]}, max_model_len,
                              max(1, min(self.entropy_logprobs, vocab_size)), threads)
        self.oracle = (_make_llm(oracle_path, "oracle", {**options, **per_model["oracle"]}, max_model_len, 1, threads)
                       if oracle_path is not None else None)

    # ------------------------------------------------------------------ the round loop
    def run_block(
        self, requests: list[SampleRequest], on_tokens: Callable[[int], None] | None = None
    ) -> list[SampleRecord]:
        """Draw every requested sample to completion (EOS or max_tokens); records in request order."""
        rows = [self._start(req) for req in requests]
        for row in rows:
            self._check(row)
        active = [row for row in rows if not row.done]
        while active:
            before = sum(row.generated for row in active)
            self._round(active)
            if on_tokens is not None:
                on_tokens(sum(row.generated for row in active) - before)
            active = [row for row in active if not row.done]
        return [self._finish(row) for row in rows]

    def _check(self, row: SampleRequest | _Row) -> None:
        """Refuse what this engine cannot run, naming the config."""
        request = row.request
        spec = request.config.policy
        if spec.name != "base" and self.oracle is None:
            raise VllmEngineError(f"config {request.config_id!r} needs an oracle model")
        if spec.name == "judge" and spec.head:
            raise VllmEngineError(
                f"config {request.config_id!r}: the judge head reads the oracle's hidden states, which vLLM "
                "does not return; run it with engine = 'torch'"
            )
        need = len(request.prompt_ids) + request.config.max_tokens
        if need > self.max_model_len:
            raise VllmEngineError(f"prompt + max_tokens = {need} exceeds the engine's max_model_len {self.max_model_len}")

    def _start(self, request: SampleRequest) -> _Row:
        """Initial state of one sample."""
        record = SampleRecord(request.config_id, request.problem_id, request.sample_index, request.seed)
        spec = request.config.policy
        row = _Row(request, record, list(request.prompt_ids), [-1] * len(request.prompt_ids), policies.start(spec, request.seed))
        if spec.name == "oracle":
            row.oracle_left = request.config.max_tokens
        return row

    def _round(self, active: list[_Row]) -> None:
        """One round: base segments, then judging, then oracle segments."""
        base_rows: list[_Row] = []
        for row in active:
            spec = row.request.config.policy
            if row.oracle_left > 0:
                continue
            if not policies.needs_base_stats(spec) and policies.wants_oracle(spec, row.state, row.generated, 0.0, 1.0):
                self._hand_to_oracle(row)
            else:
                base_rows.append(row)
        if base_rows:
            self._base_segments(base_rows)
        to_judge = [row for row in base_rows if self._judge_due(row)]
        if to_judge:
            self._judge(to_judge)
        oracle_rows = [row for row in active if row.oracle_left > 0]
        if oracle_rows:
            self._oracle_segments(oracle_rows)

    def _base_segments(self, rows: list[_Row]) -> None:
        """Each row's base writes until the policy's next decision point (or a stop trips)."""
        from vllm import SamplingParams

        params = []
        for row in rows:
            spec, config = row.request.config.policy, row.request.config
            length = row.remaining
            extra = None
            if spec.name == "random" and row.state.positions:
                length = min(length, row.state.positions[0] - row.generated)
            elif spec.name == "judge" and row.state.used < spec.max_c:
                length = min(length, spec.every - (row.generated - row.judged))
            elif policies.needs_base_stats(spec) and row.state.used < spec.max_c:
                threshold = spec.tau if spec.name == "entropy" else spec.delta
                extra = {STOP_KEY: (spec.name, float(threshold), self.sentinel_id)}
            params.append(SamplingParams(
                temperature=config.base.temperature, top_p=config.base.top_p, max_tokens=max(1, length),
                seed=segment_seed(row.request.seed, row.generated, PROVENANCE_BASE),
                stop_token_ids=[self.sentinel_id] if extra else None, extra_args=extra,
                logprobs=self.entropy_logprobs or None, detokenize=False,
            ))
        outputs = self._generate(self.base, rows, params, PROVENANCE_BASE)
        for row, output in zip(rows, outputs):
            tokens = list(output.token_ids)
            logprobs = output.logprobs or [None] * len(tokens)
            tripped = bool(tokens) and tokens[-1] == self.sentinel_id and output.stop_reason == self.sentinel_id
            if tripped:
                tokens, logprobs = tokens[:-1], logprobs[:-1]
            for token, step in zip(tokens, logprobs):
                entropy = topk_entropy([lp.logprob for lp in step.values()]) if step else float("nan")
                self._append(row, token, PROVENANCE_BASE, entropy)
            row.filled[PROVENANCE_BASE] = len(row.tokens)
            if tripped and not row.done:
                self._hand_to_oracle(row)

    def _oracle_segments(self, rows: list[_Row]) -> None:
        """Each row's oracle writes its intervention's k tokens (or to the end for policy oracle)."""
        from vllm import SamplingParams

        params = [SamplingParams(
            temperature=row.request.config.oracle.temperature, top_p=row.request.config.oracle.top_p,
            max_tokens=min(row.oracle_left, row.remaining), detokenize=False,
            seed=segment_seed(row.request.seed, row.generated, PROVENANCE_ORACLE),
        ) for row in rows]
        outputs = self._generate(self.oracle, rows, params, PROVENANCE_ORACLE)
        for row, output in zip(rows, outputs):
            for token in output.token_ids:
                self._append(row, int(token), PROVENANCE_ORACLE, float("nan"))
                row.oracle_left -= 1
                if row.done:
                    break
            row.oracle_left = 0 if row.done else row.oracle_left
            row.filled[PROVENANCE_ORACLE] = len(row.tokens)
            if row.oracle_left == 0:
                row.judged = row.generated  # the judge never re-scores the oracle's own tokens

    @staticmethod
    def _judge_due(row: _Row) -> bool:
        """Judge policy: a full segment of unjudged base tokens, or the sample just stopped."""
        spec = row.request.config.policy
        if spec.name != "judge" or row.state.used >= spec.max_c or row.generated <= row.judged:
            return False
        return row.done or row.generated - row.judged >= spec.every

    def _judge(self, rows: list[_Row]) -> None:
        """The oracle scores each row's unjudged base tokens (prompt logprobs); roll back at the first rejected."""
        from vllm import SamplingParams

        for row in rows:  # re-read the last settled token so the first unjudged one gets a prediction
            first = len(row.request.prompt_ids) + row.judged
            row.filled[PROVENANCE_ORACLE] = min(row.filled[PROVENANCE_ORACLE], first - 1)
        params = [SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False) for _ in rows]
        outputs = self._generate(self.oracle, rows, params, PROVENANCE_ORACLE, prompt_logprobs=True)
        for row, prompt_logprobs in zip(rows, outputs):
            spec = row.request.config.policy
            first = len(row.request.prompt_ids) + row.judged
            row.filled[PROVENANCE_ORACLE] = len(row.tokens)
            scores = [math.exp(prompt_logprobs[i][row.tokens[i]].logprob) for i in range(first, len(row.tokens))]
            flagged = policies.judge_flags(spec, row.state, scores)
            if flagged is None:
                row.judged = row.generated
                continue
            cut = first + flagged
            row.record.discarded += len(row.tokens) - cut
            del row.tokens[cut:], row.owner[cut:], row.entropy[row.judged + flagged:]
            row.done, row.record.finish_reason = False, ""
            row.filled[PROVENANCE_BASE] = min(row.filled[PROVENANCE_BASE], cut)
            row.filled[PROVENANCE_ORACLE] = cut - 1
            row.judged = row.generated
            self._hand_to_oracle(row)

    # ------------------------------------------------------------------ helpers
    def _generate(self, llm: Any, rows: list[_Row], params: list[Any], who: int, prompt_logprobs: bool = False) -> list[Any]:
        """One vLLM call over the rows' sequences; books each row's prefill for `who`."""
        from vllm.inputs import TokensPrompt

        for row in rows:
            first_call = who not in row.called
            row.called.add(who)
            start = 0 if first_call else row.filled[who]
            foreign = sum(1 for owner in row.owner[start:] if owner != who)
            if who == PROVENANCE_BASE:
                row.record.base_prefill += foreign
            else:
                row.record.oracle_prefill += foreign
        prompts = [TokensPrompt(prompt_token_ids=list(row.tokens)) for row in rows]
        outputs = llm.generate(prompts, params, use_tqdm=False)
        if prompt_logprobs:
            return [output.prompt_logprobs for output in outputs]
        return [output.outputs[0] for output in outputs]

    def _hand_to_oracle(self, row: _Row) -> None:
        """Start an intervention: the oracle writes the next k tokens."""
        spec = row.request.config.policy
        policies.record_intervention(spec, row.state)
        row.record.interventions += 1
        row.oracle_left = spec.k

    def _append(self, row: _Row, token: int, who: int, entropy: float) -> None:
        """Add a generated token and check for the end of the sample."""
        row.tokens.append(int(token))
        row.owner.append(who)
        row.entropy.append(entropy)
        if who == PROVENANCE_BASE:
            row.record.base_decode += 1
        else:
            row.record.oracle_decode += 1
        if token in self.eos_ids:
            row.done, row.record.finish_reason = True, "eos"
        elif row.generated >= row.request.config.max_tokens:
            row.done, row.record.finish_reason = True, "length"

    def _finish(self, row: _Row) -> SampleRecord:
        """Fill the record's token lists."""
        prompt_len = len(row.request.prompt_ids)
        row.record.token_ids = row.tokens[prompt_len:]
        row.record.provenance = row.owner[prompt_len:]
        row.record.base_entropy = row.entropy
        return row.record


def _make_llm(path: str, role: str, options: dict[str, Any], max_model_len: int, max_logprobs: int, threads: int | None) -> Any:
    """One vLLM `LLM` with prefix caching and the stop processor; CPU/GPU defaults, options override."""
    from vllm.platforms import current_platform

    on_cpu = current_platform.is_cpu()
    if on_cpu:
        # in-process engine (two LLMs in one process), and an explicit thread count (vLLM's CPU
        # backend runs ~10x slower when OMP_NUM_THREADS is unset)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("OMP_NUM_THREADS", str(threads or torch.get_num_threads()))
    from vllm import LLM

    from sampling.vllm_stop import PolicyStopProcessor

    kwargs: dict[str, Any] = {
        "model": path, "tokenizer": path, "enable_prefix_caching": True, "max_model_len": max_model_len,
        "seed": 0, "logits_processors": [PolicyStopProcessor], "max_logprobs": max_logprobs,
        # per-request seeds need whole prefills (chunked prefill with seeded requests crashes on CPU)
        "enable_chunked_prefill": False, "max_num_batched_tokens": max(8192, max_model_len),
    }
    if on_cpu:
        kwargs.update(dtype="float32", kv_cache_memory_bytes=DEFAULT_CPU_KV_CACHE_BYTES)
    else:
        kwargs.update(gpu_memory_utilization=DEFAULT_GPU_MEMORY[role])
    kwargs.update(options)
    try:
        return LLM(**kwargs)
    except TypeError as exc:
        raise VllmEngineError(f"engine_options for the {role} model: {exc}") from None
