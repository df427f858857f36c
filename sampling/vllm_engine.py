"""The vLLM engine: the torch engine's guided semantics on two vLLM `LLM` instances.

Each sample is a small state machine that submits one request at a time to the base or the
oracle; both engines are stepped in turn, and a finished request immediately queues the sample's
next one, so samples do not wait for each other (no round barriers; a judge sample may wait for
another sample's request that scores the same tokens, see 2.):

1. **Base segment.** The sample's whole sequence so far as token ids (`TokensPrompt`; prefix
   caching means only the unseen suffix is computed), `max_tokens` up to the policy's next
   decision point (the next `random` position, or the end). For `entropy`/`margin` the segment
   is open-ended and a logits processor (`sampling.vllm_stop`) stops it at the exact triggering
   step: it computes the base's full-distribution entropy / top-1 − top-2 margin on the raw
   logits (T = 1, the torch engine's statistic) and, where the threshold trips, forces a
   sentinel token that is a stop token. In those requests the sentinel is masked at every other
   step, so it is never sampled (it is an unused embedding row, which the processor masks in every
   request as an id past the tokenizer, or else the pad/unk/a reserved token, which no trained
   model writes). The forced step costs nothing extra: the torch engine runs the same forward.
2. **Judge.** A `judge` sample's base segment is one open-ended request whose tokens stream back
   every `every` steps (`RequestOutputKind.DELTA`) into a buffer ahead of the settled sequence.
   Once `judge_windows` windows are buffered, the oracle scores them in one request with
   `prompt_logprobs=0` (the probability of each, reading the prefix cache, see `_submit_judge`),
   covering whatever the base has written by the time the request is admitted (the scores do not
   depend on where a request ends). Scores are remembered by exact prefix (`PrefixTrie`) and
   shared by the block's samples: tokens already scored after the same prefix need no request,
   and a sample whose next token another sample's request in flight is scoring waits for it
   (`_wait_for_promised`). The tokens are then settled window by window
   (`every` tokens) exactly as the torch engine judges them (`_settle`). At the first token below
   alpha the sample is truncated and handed to the oracle, and the stream is aborted: what the
   base wrote past the judged window is dropped uncounted (the torch engine never computes it).
   The hidden-state judge head needs the oracle's hidden states, which vLLM does not return: it
   is refused here.
3. **Oracle segment.** An intervention is one oracle request of `max_tokens = k`.

Oracle requests (segments and judge scoring) are admitted in batches (`_admit`): an oracle step
costs about the same for few sequences as for many, so a new request waits until enough do.

Token accounting mirrors the torch engine token for token (see docs/ARCHITECTURE.md): a model's
prefill is every token it had not seen that it did not write (the prompt at its first call).
Sampling uses vLLM's sampler with a per-request seed derived from (sample seed, position, model),
so a block is reproducible; draws differ from the torch engine's, so the two engines agree in
distribution (tests check pass@1, coverage and token counts), and exactly under greedy decoding.
`base_entropy` is recorded only with `engine_options.entropy_logprobs = K` (from the top-K
logprobs: exact when K covers the vocabulary, a lower bound otherwise, see `topk_entropy`);
by default it is NaN (the policies' decisions never need it: the stop processor computes the
exact statistic).
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from sampling import policy as policies
from sampling.models import stop_ids
from sampling.prefix_trie import PrefixTrie
from sampling.records import PROVENANCE_BASE, PROVENANCE_ORACLE, SampleRecord, SampleRequest
from sampling.sample_state import SampleState

STOP_KEY = "study_stop"  # SamplingParams.extra_args key read by PolicyStopProcessor
DEFAULT_CPU_KV_CACHE_BYTES = 1 << 30
DEFAULT_GPU_MEMORY = {"base": 0.25, "oracle": 0.6}
ROLES = ("base", "oracle")  # [engine_options.base] / [engine_options.oracle]: vLLM options for one model
# this engine's own options (not vLLM's): set in [engine_options] itself, for both models
OWN_OPTIONS = ("entropy_logprobs", "sentinel_token_id", "judge_windows", "oracle_admit_fraction", "oracle_max_hold")
# vLLM options the engine sets itself or that would load something other than what the run records: what to use instead
RESERVED_OPTIONS = {
    "model": "name the models in the experiment's [models] table",
    "tokenizer": "the models' own tokenizer is used (name the models in [models])",
    "hf_config_path": "name the models in [models] (a local folder with the config you want)",
    "model_weights": "name the models in [models]",
    "revision": "pin a version by naming a local snapshot folder in [models] (the run records its sha256)",
    "tokenizer_revision": "pin a version by naming a local snapshot folder in [models]",
    "code_revision": "pin a version by naming a local snapshot folder in [models]",
    "skip_tokenizer_init": "the engine's stop processor needs the tokenizer",
    "seed": "each request is seeded from the experiment's seed (set `seed` in the experiment)",
    "logits_processors": "the engine installs its own stop processor",
    "max_model_len": "it is the longest prompt plus the experiment's max_tokens (set max_tokens)",
    "max_logprobs": "set engine_options.entropy_logprobs",
    "logprobs_mode": "the engine reads raw logprobs (recorded entropy, judge scores)",
    "generation_config": "the engine builds every request's sampling parameters itself (temperatures and top_p in "
                         "[sampling]) and stops on the model folder's end-of-sequence ids",
    "override_generation_config": "the engine builds every request's sampling parameters itself (set temperatures "
                                  "and top_p in [sampling])",
}
# options that change speed, memory, scheduling, parallelism or caching, not the models' numerics or what is
# recorded: their only effect on samples is the floating-point reduction order, which already varies with each
# block's batch composition (and the engine's own batching options keep greedy records identical, see the tests);
# left out of `VllmEngine.sampling_options`, so a run may continue with other values
PERFORMANCE_OPTIONS = frozenset({
    "judge_windows", "oracle_admit_fraction", "oracle_max_hold",
    "gpu_memory_utilization", "kv_cache_memory_bytes", "num_gpu_blocks_override", "cpu_offload_gb",
    "max_num_seqs", "max_num_batched_tokens", "enable_chunked_prefill", "enable_prefix_caching", "block_size",
    "prefix_caching_hash_algo", "scheduling_policy", "async_scheduling", "enforce_eager", "compilation_config",
    "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "distributed_executor_backend",
    "disable_custom_all_reduce", "max_parallel_loading_workers", "download_dir", "use_tqdm_on_load",
    "disable_log_stats", "served_model_name",
})


class VllmEngineError(ValueError):
    """A request or option the vLLM engine cannot serve."""


OLDEST_VLLM = "0.26"  # the oldest vLLM this engine has run on (0.26.0, on an H100); 0.25 and older were never tried


def vllm_available() -> str | None:
    """None when a vLLM this engine runs on imports, else the reason it cannot be used."""
    try:
        import vllm
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        return f"{type(exc).__name__}: {exc}"
    return vllm_too_old(getattr(vllm, "__version__", ""))


def vllm_too_old(version: str) -> str | None:
    """Why a vLLM of this version cannot run the engine, or None (also when the version does not parse)."""
    from packaging.version import InvalidVersion, Version

    try:
        too_old = Version(version).release < Version(OLDEST_VLLM).release  # 0.26.0rc1 and dev builds of 0.26 count as 0.26
    except InvalidVersion:
        return None
    return (f"vLLM {version} is older than {OLDEST_VLLM}, the oldest this engine has run on (its request API "
            "changes between versions); install a newer one") if too_old else None


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


def check_sentinel(value: Any, model_vocab_size: int, tokenizer: Any, eos_ids: set[int]) -> int:
    """engine_options.sentinel_token_id, refused unless it is an id the base never needs to write.

    Allowed: an embedding row past the tokenizer (never sampled) or a special/added token (pad, unk,
    reserved) that is not EOS/BOS; an ordinary token would be masked in every entropy/margin request.
    """
    name = "engine_options.sentinel_token_id"
    if isinstance(value, bool) or not isinstance(value, int):
        raise VllmEngineError(f"{name} must be an integer token id, got {value!r}")
    if not 0 <= value < model_vocab_size:
        raise VllmEngineError(f"{name} = {value} is not a token id of the base model (ids 0 to {model_vocab_size - 1})")
    free = [i for i in sorted(_special_ids(tokenizer)) if i not in eos_ids and i != tokenizer.bos_token_id]
    free += [len(tokenizer)] if model_vocab_size > len(tokenizer) else []
    past = f" or an id past the tokenizer's {len(tokenizer)} ids" if model_vocab_size > len(tokenizer) else ""
    hint = (f"use an unused special token{past}, e.g. one of {free[:5]}" if free else
            "this model has no id free to serve as the sentinel (no spare special token, no embedding row past the "
            "tokenizer): its entropy and margin configs need the torch engine")
    if value in eos_ids or value == tokenizer.bos_token_id:
        kind = "the beginning-of-sequence" if value == tokenizer.bos_token_id else "an end-of-sequence"
        raise VllmEngineError(f"{name} = {value} is {kind} id {_token(tokenizer, value)!r}: samples would be cut short; {hint}")
    if value < len(tokenizer) and value not in _special_ids(tokenizer):
        raise VllmEngineError(
            f"{name} = {value} is the ordinary token {_token(tokenizer, value)!r}, which the base could then never "
            f"write in an entropy/margin sample; {hint}"
        )
    return value


def _special_ids(tokenizer: Any) -> set[int]:
    """The tokenizer's special and added token ids."""
    return set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())


def _token(tokenizer: Any, token_id: int) -> str:
    """A token's text, for messages."""
    return str(tokenizer.convert_ids_to_tokens(token_id))


@functools.lru_cache(maxsize=1)
def vllm_option_names() -> frozenset[str]:
    """The keyword arguments `vllm.LLM` takes: vLLM's `EngineArgs` fields and `LLM.__init__`'s own parameters."""
    import inspect

    from vllm import LLM
    from vllm.engine.arg_utils import EngineArgs

    named = {p.name for p in inspect.signature(LLM.__init__).parameters.values()
             if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"}
    return frozenset({f.name for f in dataclasses.fields(EngineArgs)} | named)


def check_engine_options(options: dict[str, Any]) -> None:
    """Refuse, before any model loads, keys of [engine_options] that are unknown, reserved or misplaced."""
    problems, unknown = [], []
    for key, value in options.items():
        if key in ROLES:
            if not isinstance(value, dict):
                problems.append(f"engine_options.{key} must be a table of vLLM options for the {key} model, got {value!r}")
                continue
            for inner in value:
                if inner in OWN_OPTIONS:
                    problems.append(f"engine_options.{key}.{inner} is an option of the engine itself, for both models: "
                                    f"set it in [engine_options], not in [engine_options.{key}]")
                else:
                    _check_vllm_key(f"engine_options.{key}.{inner}", inner, problems, unknown)
        elif key not in OWN_OPTIONS:
            _check_vllm_key(f"engine_options.{key}", key, problems, unknown)
    if unknown:
        what = "options" if len(unknown) > 1 else "option"
        problems.append(f"unknown {what} {', '.join(unknown)}: vllm.LLM (vLLM's EngineArgs) takes no such argument, "
                        f"and this engine's own options are {', '.join(OWN_OPTIONS)}")
    if problems:
        raise VllmEngineError("; ".join(problems))


def _check_vllm_key(where: str, key: str, problems: list[str], unknown: list[str]) -> None:
    """Note in `problems` a reserved vLLM option, in `unknown` one vLLM does not take (with near matches)."""
    if key in RESERVED_OPTIONS:
        problems.append(f"{where} cannot be set in engine_options (the engine sets it): {RESERVED_OPTIONS[key]}")
        return
    known = vllm_option_names()
    if key not in known:
        close = difflib.get_close_matches(key, sorted(known | set(OWN_OPTIONS)), n=3)
        unknown.append(where + (f" (did you mean {' or '.join(close)}?)" if close else ""))


def recorded_options(own: dict[str, Any], per_model: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The JSON form of the options that define what is sampled: `own` and each model's options, less `PERFORMANCE_OPTIONS`."""
    kept = {key: value for key, value in own.items() if key not in PERFORMANCE_OPTIONS}
    kept.update({role: {k: v for k, v in values.items() if k not in PERFORMANCE_OPTIONS} for role, values in per_model.items()})
    return json.loads(json.dumps(kept, sort_keys=True, default=str))


def segment_seed(sample_seed: int, position: int, stream: int) -> int:
    """Per-request vLLM seed for one segment: a pure function of (sample seed, position, model)."""
    key = f"{sample_seed}\x00{position}\x00{stream}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 2


@dataclass
class _Row(SampleState):
    """A sample's decoding state plus how far each model has processed its tokens."""

    filled: list[int] = field(default_factory=lambda: [0, 0])  # tokens each model (base, oracle) has processed
    stream: str | None = None  # judge: the open-ended base request writing ahead of the judge
    stream_done: bool = False  # judge: that request has finished (the buffer holds all it wrote)
    ahead: list[int] = field(default_factory=list)  # judge: base tokens written but not yet settled
    ahead_entropy: list[float] = field(default_factory=list)  # judge: their base entropy (NaN: not recorded)
    scores: list[float] = field(default_factory=list)  # judge: the oracle's probability of ahead[:len(scores)]
    judging: int | None = None  # judge: ahead tokens the judge request in flight covers (None: no request)
    head_scores: list[float] = field(default_factory=list)  # judge: scores waiting for the first one's (head request)
    trip_entropy: float = math.nan  # entropy/margin: the base's entropy at the step that tripped (the oracle writes that token)

    def sequence(self, upto: int | None = None) -> list[int]:
        """The settled tokens, then those the judge request in flight covers; the first `upto` of them."""
        return (self.tokens + self.ahead[: self.judging or 0])[:upto]


class VllmEngine:
    """Runs blocks of sample requests on a base/oracle pair of vLLM `LLM`s, one request per sample in flight."""

    name = "vllm"

    def __init__(
        self, base_path: str, oracle_path: str | None, eos_ids: set[int], sentinel_id: int, vocab_size: int,
        max_model_len: int, options: dict[str, Any] | None = None, threads: int | None = None,
        oracle_positions: int | None = None,
    ) -> None:
        options = dict(options or {})
        check_engine_options(options)
        options.pop("sentinel_token_id", None)  # given as sentinel_id (see `vllm_engine_for`)
        # recording base_entropy needs per-token logprobs from vLLM (~20% wall time on the toy pair)
        # (K past the vocabulary is the whole vocabulary: the exact entropy; vLLM refuses more than it has)
        self.entropy_logprobs = min(_option(options, "entropy_logprobs", 0, int), vocab_size)
        # oracle batching (see `_admit`): hold new oracle requests until this fraction of the base's
        # samples wait, or the oldest has waited this many steps
        self.admit_fraction = _option(options, "oracle_admit_fraction", 0.5, float)
        self.max_hold = _option(options, "oracle_max_hold", 8, int)
        # judge: ask for scores once this many windows of `every` tokens are buffered (see `_settle`)
        self.judge_windows = _option(options, "judge_windows", 2, int, least=1)
        self.eos_ids, self.sentinel_id = set(eos_ids), sentinel_id
        self.max_model_len = max_model_len
        per_model = {role: dict(options.pop(role, {}) or {}) for role in ROLES}
        if oracle_path is not None:
            refuse_two_in_process_gpu_engines()
        spawn_gpu_engine_processes()
        self.base = _make_llm(base_path, "base", {**options, **per_model["base"]}, max_model_len,
                              max(1, min(self.entropy_logprobs, vocab_size)), threads)
        # the oracle gets one position more where its model has it: a judge request scores a full-length
        # sample and, like every vLLM request, asks for at least one output token (see `_check`)
        self.oracle_len = max_model_len + 1 if oracle_positions is None else min(max_model_len + 1, oracle_positions)
        self.oracle = (_make_llm(oracle_path, "oracle", {**options, **per_model["oracle"]}, self.oracle_len, 1, threads)
                       if oracle_path is not None else None)
        models = {"base": self.base, "oracle": self.oracle} if self.oracle is not None else {"base": self.base}
        self._recorded = recorded_options(
            {"entropy_logprobs": self.entropy_logprobs, "sentinel_token_id": self.sentinel_id},
            {role: {**options, **per_model[role], **_resolved_numerics(llm)} for role, llm in models.items()},
        )
        self._requests_made, self._tick, self._blocks_run = 0, 0, 0
        self._pending: dict[str, tuple[_Row, str]] = {}
        self._held: list[tuple[int, str, _Row, str, Any, int | None]] = []  # oracle requests waiting for a burst: (tick, id, row, kind, params, upto)
        self._on_tokens: Callable[[int], None] | None = None
        self._scores = PrefixTrie()  # judge: the oracle's score of each token by its prefix, shared by the block's samples
        self._promised = PrefixTrie()  # judge: which judge request in flight scores each token, by its prefix
        self._waiting: dict[str, list[_Row]] = {}  # judge: samples waiting for another sample's judge request
        # this block's judge requests repeated without the cache, scores taken from `_scores`, and judge
        # requests not sent because another sample's request in flight was scoring the same tokens
        self.judge_recomputes = self.scores_reused = self.judge_waits = 0

    @property
    def sampling_options(self) -> dict[str, Any]:
        """The options that define what this engine samples, as JSON: a run records them and refuses others on resume.

        {"entropy_logprobs", "sentinel_token_id", "base": {...}, "oracle": {...}}: each model's vLLM options
        as given and its resolved dtype, quantization and kv_cache_dtype; `PERFORMANCE_OPTIONS` are left out.
        """
        return json.loads(json.dumps(self._recorded))

    # ------------------------------------------------------------------ the event loop
    def run_block(
        self, requests: list[SampleRequest], on_tokens: Callable[[int], None] | None = None
    ) -> list[SampleRecord]:
        """Draw every requested sample to completion (EOS or max_tokens); records in request order."""
        rows = [_Row.start(req) for req in requests]
        for row in rows:
            self._check(row)
        self._pending, self._held, self._tick = {}, [], 0
        self._on_tokens, self._scores, self._promised, self._waiting = on_tokens, PrefixTrie(), PrefixTrie(), {}
        self._blocks_run += 1  # a new namespace for the judge's oracle cache: it holds what _scores knows
        self.judge_recomputes = self.scores_reused = self.judge_waits = 0
        base, oracle = self.base.llm_engine, self.oracle.llm_engine if self.oracle is not None else None
        try:
            for row in rows:
                self._advance(row)
            while self._pending:
                self._tick += 1
                if base.has_unfinished_requests():
                    self._step(base)
                if oracle is not None and (oracle.has_unfinished_requests() or self._admit(base)):
                    self._step(oracle)
        finally:  # an error (or Ctrl-C) must not leave requests queued for the next block
            if self._pending:
                for engine in (base, oracle):
                    if engine is not None:
                        engine.abort_request(list(self._pending))
                self._pending, self._held, self._waiting = {}, [], {}
        return [row.finish() for row in rows]

    def _step(self, engine: Any) -> None:
        """One scheduler step of one model; finished requests move their samples on, judge streams report as they go."""
        for output in engine.step():
            if output.request_id not in self._pending:  # a stream aborted earlier in this step
                continue
            if output.finished:
                self._finished(output)
            else:  # only judge streams report before they finish (RequestOutputKind.DELTA)
                self._streamed(self._pending[output.request_id][0], output)

    def _admit(self, base: Any) -> bool:
        """Start an oracle burst with the held requests if it is worth a step now.

        An oracle step costs about the same for 5 requests as for 100 (mostly fixed cost on small
        batches), so new oracle requests are held until enough samples wait (`admit_fraction` of
        the base's), the oldest has waited `max_hold` ticks, or the base has nothing else to do;
        then all are admitted together and the oracle steps until they finish.
        """
        if not self._held:
            return False
        waiting, oldest = len(self._held), self._held[0][0]
        if (waiting < self.admit_fraction * base.get_num_unfinished_requests()
                and self._tick - oldest < self.max_hold and base.has_unfinished_requests()):
            return False
        held, self._held = self._held, []
        for _, request_id, row, kind, params, upto in held:
            if kind == "judge" and self._wait_for_promised(row, request_id):
                continue
            prompt = self._prompt(row, kind, upto)
            self.oracle.llm_engine.add_request(request_id, prompt, params)
            if kind == "judge":  # the tokens it will score, for `_wait_for_promised`
                sequence, start = row.sequence(), len(row.tokens) + len(row.scores)
                self._promised.put(sequence, start, [request_id] * (len(sequence) - start))
        return True

    def _wait_for_promised(self, row: _Row, request_id: str) -> bool:
        """Whether the judge request in flight of another sample with the same prefix already scores this
        sample's next token: then this sample waits for it (`_wake`) instead of sending its own."""
        start = len(row.tokens) + len(row.scores)
        owner = self._promised.run(row.tokens + row.ahead, start, start + 1)
        if not owner or owner[0] not in self._pending:
            return False
        del self._pending[request_id]
        self._waiting.setdefault(owner[0], []).append(row)
        self.judge_waits += 1
        return True

    def _wake(self, request_id: str) -> None:
        """Samples that waited for this judge request take its scores (and ask for the rest themselves)."""
        for row in self._waiting.pop(request_id, []):
            row.judging = None
            self._submit_judge(row)

    def _check(self, row: _Row) -> None:
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
        if spec.name == "judge" and need + 1 > self.oracle_len:
            raise VllmEngineError(
                f"config {request.config_id!r}: the judge scores a full-length sample in a request for one more token, "
                f"so prompt + max_tokens + 1 = {need + 1} must fit the oracle's {self.oracle_len} positions; lower max_tokens"
            )

    def _advance(self, row: _Row) -> None:
        """Submit the sample's next request: an oracle segment, a base segment, or nothing (done)."""
        if row.done:
            return
        spec = row.request.config.policy
        if row.oracle_left == 0 and not policies.needs_base_stats(spec) and policies.wants_oracle(
            spec, row.state, row.generated, 0.0, 1.0
        ):
            row.hand_to_oracle()
        if row.oracle_left > 0:
            self._submit_oracle_segment(row)
        else:
            self._submit_base_segment(row)

    def _finished(self, output: Any) -> None:
        """Book a finished request and move its sample on."""
        row, kind = self._pending.pop(output.request_id)
        if kind == "stream":
            self._streamed(row, output)
        elif kind == "base":
            self._report(self._base_done(row, output.outputs[0]))
            self._advance(row)
        elif kind == "oracle":
            self._report(self._oracle_done(row, output.outputs[0]))
            self._advance(row)
        elif kind == "judge":
            self._judge_scored(row, output)
            self._wake(output.request_id)
        else:  # "judge head": the oracle's probability of the first token the judge request scored
            start = len(row.tokens) + len(row.scores)
            row.head_scores[0] = math.exp(output.outputs[0].logprobs[0][row.sequence()[start]].logprob)
            self._scores.put(row.sequence(), start, row.head_scores[:1])
            row.scores += row.head_scores
            row.head_scores, row.judging = [], None
            self._settle(row)

    def _streamed(self, row: _Row, output: Any) -> None:
        """Buffer the tokens a judge stream wrote this step; settle what the judge has scored."""
        completion = output.outputs[0]
        row.ahead += completion.token_ids
        if completion.logprobs:
            row.ahead_entropy += [topk_entropy([lp.logprob for lp in step.values()]) for step in completion.logprobs]
        else:
            row.ahead_entropy += [float("nan")] * len(completion.token_ids)
        if output.finished:
            row.stream, row.stream_done = None, True
        if row.judging is None and self._scores_wanted(row):
            self._settle(row)

    def _judge_scored(self, row: _Row, output: Any) -> None:
        """Keep the oracle's probability of each buffered token the judge request scored; settle.

        vLLM returns logprobs only for the positions it computed; the tokens whose scoring logits
        were in cached blocks (written by this or another sample with the same prefix) take the
        scores remembered when those blocks were computed. Where none is remembered: the first
        token past the cached blocks alone is asked for (`_submit_judge_head`); anything earlier
        is recomputed without the cache (rare: the oracle computes little it does not score, such
        as a prompt that another problem's prompt begins with).
        """
        start, cached = len(row.tokens) + len(row.scores), output.num_cached_tokens
        sequence = row.sequence()
        first = max(start, cached + 1)  # the first token whose scoring logits were computed
        scores = [math.exp(output.prompt_logprobs[i][sequence[i]].logprob) for i in range(first, len(sequence))]
        self._scores.put(sequence, first, scores)
        if first > start:
            known = self._scores.run(sequence, start, first)
            row.scores += known
            self.scores_reused += len(known)
            if start + len(known) == cached:
                row.head_scores = [math.nan] + scores
                self._submit_judge_head(row)
                return
            if start + len(known) < cached:
                self.judge_recomputes += 1
                self._submit_judge(row, reuse_cache=False)
                return
        row.scores += scores
        row.judging = None
        self._settle(row)

    def _settle(self, row: _Row) -> None:
        """Settle buffered base tokens window by window as the torch engine judges them; ask for scores or move on.

        Each window (`every` tokens, fewer where the sample ended) is appended and counted, the
        oracle's prefill booked as in the torch engine (it re-reads the last settled token, not booked again, then
        the window), and judged. A rejection rolls back, ends the stream and hands to the oracle.
        """
        spec = row.request.config.policy
        while row.ahead and not row.done:
            size = spec.every - (row.generated - row.judged)
            if (len(row.ahead) < size and not row.stream_done) or len(row.scores) < min(size, len(row.ahead)):
                break
            size, first = min(size, len(row.ahead)), row.first_unjudged
            for token, entropy in zip(row.ahead[:size], row.ahead_entropy[:size]):
                row.append(token, PROVENANCE_BASE, entropy, self.eos_ids)
            scores = row.scores[:size]
            del row.ahead[:size], row.ahead_entropy[:size], row.scores[:size]
            self._report(size)
            row.filled[PROVENANCE_BASE] = len(row.tokens)
            row.filled[PROVENANCE_ORACLE] = min(row.filled[PROVENANCE_ORACLE], first - 1)
            row.book_prefill(PROVENANCE_ORACLE, row.filled[PROVENANCE_ORACLE])
            if self._judge_done(row, scores) is not None:
                self._end_stream(row)
                self._advance(row)
                return
        if row.done or (row.stream_done and not row.ahead):  # all the base wrote is settled
            self._end_stream(row)
            self._advance(row)
        elif row.judging is None and self._scores_wanted(row):
            self._submit_judge(row)

    def _scores_wanted(self, row: _Row) -> bool:
        """Whether the buffered tokens should be scored now: they make `judge_windows` windows
        (counting the current one's settled part) and not all are scored, or the stream has ended."""
        spec = row.request.config.policy
        wanted = max(len(row.scores) + 1, spec.every * self.judge_windows - (row.generated - row.judged))
        return row.stream_done or len(row.ahead) >= wanted

    def _end_stream(self, row: _Row) -> None:
        """Abort the sample's judge stream if it still runs and drop what it wrote past the settled tokens."""
        if row.stream is not None:
            self.base.llm_engine.abort_request([row.stream])
            del self._pending[row.stream]
        row.stream, row.stream_done = None, False
        row.ahead, row.ahead_entropy, row.scores = [], [], []

    def _report(self, tokens: int) -> None:
        """Tell the progress callback how many tokens were settled."""
        if self._on_tokens is not None and tokens > 0:
            self._on_tokens(tokens)

    def _submit(self, llm: Any, row: _Row, params: Any, kind: str, book: bool = True, upto: int | None = None) -> str:
        """Queue one request with the sample's sequence (whole, or its first `upto` tokens); book the model's prefill; its id.

        Oracle requests are held for a burst (`_admit`) and their prompts built when admitted.
        """
        from vllm.sampling_params import RequestOutputKind

        who = PROVENANCE_BASE if kind in ("base", "stream") else PROVENANCE_ORACLE
        if book:
            row.book_prefill(who, row.filled[who])
        params.output_kind = RequestOutputKind.DELTA if kind == "stream" else RequestOutputKind.FINAL_ONLY
        self._requests_made += 1
        request_id = f"s{self._requests_made}"
        self._pending[request_id] = (row, kind)
        if who == PROVENANCE_ORACLE:
            self._held.append((self._tick, request_id, row, kind, params, upto))
        else:
            llm.llm_engine.add_request(request_id, self._prompt(row, kind, upto), params)
        return request_id

    def _prompt(self, row: _Row, kind: str, upto: int | None) -> Any:
        """A request's prompt as token ids; a judge request covers every token buffered by now."""
        from vllm.inputs import TokensPrompt

        if kind == "judge":
            row.judging = len(row.ahead)
        prompt = TokensPrompt(prompt_token_ids=row.sequence(upto))
        if kind != "base" and kind != "stream" and row.request.config.policy.name == "judge":
            # the judge's oracle blocks are this block's judge samples' alone: whatever they cover
            # was computed by a request whose scores `_scores` remembers (see _judge_scored)
            prompt["cache_salt"] = f"judge block {self._blocks_run}"
        return prompt

    def _submit_base_segment(self, row: _Row) -> str:
        """The base writes until the policy's next decision point (or a stop trips); the request id.

        A judge sample that may still be judged gets an open-ended stream instead (see `_settle`).
        """
        from vllm import SamplingParams

        spec, config = row.request.config.policy, row.request.config
        length, extra, kind = row.remaining, None, "base"
        if spec.name == "random" and row.state.positions:
            length = min(length, row.state.positions[0] - row.generated)
        elif spec.name == "judge" and row.state.used < spec.max_c:
            kind = "stream"
        elif policies.needs_base_stats(spec) and row.state.used < spec.max_c:
            threshold = spec.tau if spec.name == "entropy" else spec.delta
            extra = {STOP_KEY: (spec.name, float(threshold), self.sentinel_id)}
        request_id = self._submit(self.base, row, SamplingParams(
            temperature=config.base.temperature, top_p=config.base.top_p, max_tokens=max(1, length),
            seed=segment_seed(row.request.seed, row.generated, PROVENANCE_BASE),
            stop_token_ids=[self.sentinel_id] if extra else None, extra_args=extra,
            logprobs=self.entropy_logprobs or None, detokenize=False, skip_clone=True,
            **({"stream_interval": spec.every} if kind == "stream" and _per_request_stream_interval() else {}),
        ), kind)
        if kind == "stream":
            row.stream, row.stream_done = request_id, False
        return request_id

    def _base_done(self, row: _Row, output: Any) -> int:
        """Append a finished base segment; a tripped stop starts an intervention. The tokens appended."""
        tokens = list(output.token_ids)
        logprobs = output.logprobs or [None] * len(tokens)
        tripped = bool(tokens) and tokens[-1] == self.sentinel_id and output.stop_reason == self.sentinel_id
        if tripped:
            # the base ran at the tripping step (raw logprobs: before the processor forced the sentinel);
            # the torch engine records that entropy on the oracle's first token, so this one does too
            step = logprobs[-1]
            row.trip_entropy = topk_entropy([lp.logprob for lp in step.values()]) if step else math.nan
            tokens, logprobs = tokens[:-1], logprobs[:-1]
        for token, step in zip(tokens, logprobs):
            entropy = topk_entropy([lp.logprob for lp in step.values()]) if step else float("nan")
            row.append(token, PROVENANCE_BASE, entropy, self.eos_ids)
        row.filled[PROVENANCE_BASE] = len(row.tokens)
        if tripped and not row.done:
            row.hand_to_oracle()
        return len(tokens)  # the sentinel a tripped stop forced is no token of the sample

    def _submit_oracle_segment(self, row: _Row) -> None:
        """The oracle writes its intervention's k tokens (or to the end for policy oracle)."""
        from vllm import SamplingParams

        config = row.request.config
        judge = config.policy.name == "judge"  # its own tokens' raw logprobs are scores another sample may need
        self._submit(self.oracle, row, SamplingParams(
            temperature=config.oracle.temperature, top_p=config.oracle.top_p,
            max_tokens=min(row.oracle_left, row.remaining), detokenize=False, skip_clone=True,
            seed=segment_seed(row.request.seed, row.generated, PROVENANCE_ORACLE), logprobs=0 if judge else None,
        ), "oracle")

    def _oracle_done(self, row: _Row, output: Any) -> int:
        """Append a finished oracle segment (a judge sample's: remember the oracle's score of each token); the tokens appended."""
        if output.logprobs:
            scores = [math.exp(step[token].logprob) for token, step in zip(output.token_ids, output.logprobs)]
            self._scores.put(row.tokens + list(output.token_ids), len(row.tokens), scores)
        before = len(row.tokens)
        for token in output.token_ids:
            row.append(int(token), PROVENANCE_ORACLE, row.trip_entropy, self.eos_ids)
            row.trip_entropy = math.nan
            row.oracle_left -= 1
            if row.done:
                break
        row.oracle_left = 0 if row.done else row.oracle_left
        row.filled[PROVENANCE_ORACLE] = len(row.tokens)
        if row.oracle_left == 0:
            row.judged = row.generated  # the judge never re-scores the oracle's own tokens
        return len(row.tokens) - before

    def _submit_judge(self, row: _Row, reuse_cache: bool = True) -> None:
        """The oracle scores the buffered base tokens it has not scored, in one prefill (prompt logprobs).

        Scores already computed for the same prefix (another sample of the block wrote the same
        tokens) are taken as they are, and a request is made only for the rest. vLLM skips the
        prefix cache for prompt-logprob requests unless told otherwise; reading it returns
        logprobs only for the uncached positions, and `_judge_scored` fills in the cached ones.
        Prefill is booked as windows settle (`_settle`), not here.
        """
        from vllm import SamplingParams

        if reuse_cache and self._take_remembered(row):
            self._settle(row)  # settles, asks again for what follows, or waits for the stream
            return
        row.judging = len(row.ahead)  # in flight (the prompt, built on admission, covers what is buffered then)
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False, skip_clone=True,
                                skip_reading_prefix_cache=not reuse_cache)
        self._submit(self.oracle, row, params, "judge", book=False)

    def _take_remembered(self, row: _Row) -> bool:
        """Take the remembered scores of the buffered tokens that follow the scored ones; whether there were any."""
        known = self._scores.run(row.tokens + row.ahead, len(row.tokens) + len(row.scores))
        row.scores += known
        self.scores_reused += len(known)
        return bool(known)

    def _submit_judge_head(self, row: _Row) -> None:
        """The oracle's probability of the first token to score alone, when a cached block hid its logits.

        The sequence up to that token is wholly cached, so vLLM recomputes only its last block
        (it must compute at least the last position); the request samples one token restricted to
        the scored one and returns its raw logprob (computed before any restriction).
        """
        from vllm import SamplingParams

        start = len(row.tokens) + len(row.scores)
        params = SamplingParams(max_tokens=1, logprobs=0, allowed_token_ids=[row.sequence()[start]],
                                detokenize=False, skip_clone=True)
        self._submit(self.oracle, row, params, "judge head", book=False, upto=start)

    def _judge_done(self, row: _Row, scores: list[float]) -> int | None:
        """Roll back to just before the first token the judge rejects, and hand over to the oracle; the cut."""
        row.filled[PROVENANCE_ORACLE] = len(row.tokens)
        cut = row.apply_judgement(scores)
        if cut is not None:
            row.filled[PROVENANCE_BASE] = min(row.filled[PROVENANCE_BASE], cut)
            row.filled[PROVENANCE_ORACLE] = cut - 1  # the oracle re-reads the last kept token to predict the next
        return cut


def vllm_engine_for(pair: Any, max_model_len: int, options: dict[str, Any] | None = None, threads: int | None = None) -> VllmEngine:
    """A VllmEngine for a loaded pair (`sampling.models.load_pair`): its paths, end-of-sequence ids
    and a stop sentinel (`options["sentinel_token_id"]`, else `choose_sentinel`)."""
    options = dict(options or {})
    base = pair.manifest["base"]["path"]
    oracle = pair.manifest["oracle"]["path"] if "oracle" in pair.manifest else None
    eos_ids = stop_ids(base, pair.tokenizer)  # the base's; the torch engine stops on the same ids
    sentinel = options.pop("sentinel_token_id", None)
    if sentinel is None:
        sentinel = choose_sentinel(pair.base.config.vocab_size, pair.tokenizer, eos_ids)
    sentinel = check_sentinel(sentinel, pair.base.config.vocab_size, pair.tokenizer, eos_ids)
    positions = getattr(pair.oracle.config, "max_position_embeddings", None) if pair.oracle is not None else None
    return VllmEngine(base, oracle, eos_ids, sentinel, pair.base.config.vocab_size,
                      max_model_len=max_model_len, options=options, threads=threads, oracle_positions=positions)


def _option(options: dict[str, Any], name: str, default: Any, kind: type, least: int = 0) -> Any:
    """Pop one of this engine's own options (not vLLM's), checked to be a number >= `least`."""
    value = options.pop(name, default)
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not number or value < least or (kind is int and value != int(value)):
        raise VllmEngineError(f"engine_options.{name} must be a{'n integer' if kind is int else ' number'} >= {least}, got {value!r}")
    return kind(value)


def refuse_two_in_process_gpu_engines() -> None:
    """Refuse VLLM_ENABLE_V1_MULTIPROCESSING=0 on a GPU, where two in-process vLLM engines break each other's CUDA graphs."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu() and os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0":
        raise VllmEngineError(
            "VLLM_ENABLE_V1_MULTIPROCESSING=0 on a GPU: the base and the oracle would run as two vLLM engines in "
            "this one process, and on a GPU the first then fails at its next step (vLLM 0.26 on an H100: 'CUDA graph "
            "capturing detected at an inappropriate time'); unset it, so that each model runs in its own engine "
            "process (vLLM's GPU default)")


def spawn_gpu_engine_processes() -> None:
    """On a GPU, start vLLM's engine-core processes by spawn unless VLLM_WORKER_MULTIPROC_METHOD says otherwise.

    vLLM forks them by default while CUDA is not yet initialised in this process. On an H100 (vLLM 0.26) an
    engine forked after the torch engine had run on CPU in the same process hung at start, as forked
    children of a process whose OpenMP threads have run can; spawned, the same engines started."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")


@functools.lru_cache(maxsize=1)
def _per_request_stream_interval() -> bool:
    """Whether this vLLM's SamplingParams takes `stream_interval` (0.32 does, 0.26 does not: a stream then reports every token)."""
    from vllm import SamplingParams

    return "stream_interval" in SamplingParams.__struct_fields__


def _resolved_numerics(llm: Any) -> dict[str, Any]:
    """The dtype, quantization and KV-cache dtype a started `LLM` computes in (its defaults resolved)."""
    config = llm.llm_engine.vllm_config
    return {"dtype": str(config.model_config.dtype).removeprefix("torch."),
            "quantization": config.model_config.quantization, "kv_cache_dtype": str(config.cache_config.cache_dtype)}


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
    }
    if on_cpu:
        # block_size 32 (CPU default 128): prefix caching reuses whole blocks only, and samples
        # are resubmitted after every segment; per-request seeds need whole prefills on CPU
        # (chunked prefill with seeded requests crashes there). GPUs keep vLLM's defaults (chunked
        # prefill on: vLLM warns that turning it off is unsupported for generative models).
        kwargs.update(dtype="float32", kv_cache_memory_bytes=DEFAULT_CPU_KV_CACHE_BYTES, block_size=32,
                      enable_chunked_prefill=False, max_num_batched_tokens=max(8192, max_model_len))
    else:
        kwargs.update(gpu_memory_utilization=DEFAULT_GPU_MEMORY[role])
    kwargs.update(options)
    try:
        return LLM(**kwargs)
    except TypeError as exc:
        raise VllmEngineError(f"engine_options for the {role} model: {exc}") from None
