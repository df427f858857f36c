"""Experiment configs: a TOML file naming models, dataset, prompt, sampling and a grid of policies.

```toml
name = "toy-default"
dataset = "toy"            # toy | math500 | math | gsm8k | path/to/file.jsonl|.parquet
problems = 20              # optional: first N problems (after --levels)
levels = [1, 2, 3, 4, 5]   # optional
n = 100                    # samples per problem and config
seed = 0
max_tokens = 200
engine = "torch"           # torch | vllm

[models]
base = "toy:base"          # a local HF folder, a hub id, or toy:base / toy:oracle (relative paths: from the current
                           # folder, else beside this file, as for dataset and a judge head)
oracle = "toy:oracle"

[prompt]
template = "{problem}\\n"  # str.format with {problem}; chat = true applies the tokenizer's chat template
chat = false
system = ""                # the chat template's system message (chat = true only)
add_bos = true

[sampling]
base_temperature = 1.0
oracle_temperature = 1.0   # 0 = greedy; a sampling temperature is at least 1e-5
top_p = 1.0

[[configs]]                # lists expand to a grid; ids are generated unless given (random-c4-k5; a grid over ref_length adds -r50)
policy = "random"
c = [1, 2, 4]
k = [2, 5]

[cost]                     # optional: the default cost model of `study fit` / `study report`
model = "flops"            # flops | decode | price | seconds (measured engine time)
prices = { base = { input = 0.02, output = 0.04 }, oracle = { input = 0.2, output = 0.6 } }  # per 1M tokens, for "price"
```
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import string
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sampling.datasets import DATASET_NAMES
from sampling.policy import POLICY_NAMES, PolicySpec
from sampling.records import MIN_TEMPERATURE, GuidedConfig, SamplingParams
from sampling.store import CONFIG_ID_PATTERN

GRID_KEYS = ("c", "k", "tau", "delta", "max_c", "ref_length", "alpha", "every", "base_temperature", "oracle_temperature")
MAX_CONFIG_ID = 120  # characters; a config id names a folder (file names stop at 255 bytes)
POLICY_KEYS = {"policy", "id", *GRID_KEYS, "top_p", "head"}
TOP_KEYS = {"name", "dataset", "problems", "levels", "n", "seed", "max_tokens", "engine", "models", "prompt", "sampling", "configs",
            "engine_options", "cost"}


SAMPLING_KEYS = {"base_temperature", "oracle_temperature", "top_p"}
POLICY_PARAMETERS = {  # the policy keys each policy reads (the sampling keys apply to every policy)
    "base": set(), "oracle": set(), "random": {"c", "k", "ref_length"}, "entropy": {"tau", "k", "max_c"},
    "margin": {"delta", "k", "max_c"}, "judge": {"alpha", "k", "every", "max_c", "head"},
}
INTEGER_KEYS = {"c", "k", "max_c", "ref_length", "every"}  # the other grid keys and top_p are numbers


class ConfigError(ValueError):
    """An experiment config that cannot be used (names the file and the key)."""


def _integer(value: Any, where: str, least: int | None = None) -> int:
    """An integer setting (an integral float is allowed; 2.7, "3" and true are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if least is not None and value < least:
        raise ConfigError(f"{where} must be >= {least}, got {value!r}")
    return int(value)


def _number(value: Any, where: str) -> float:
    """A finite numeric setting (not a string, a boolean, nan or inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _boolean(value: Any, where: str) -> bool:
    """A true/false setting (not the string "false")."""
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    return value


def _string(value: Any, where: str) -> str:
    """A text setting."""
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def _table(value: Any, where: str, allowed: set[str] | None = None) -> dict[str, Any]:
    """A TOML table, optionally with only the allowed keys."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table ([section] or {{ key = value }}), got {value!r}")
    unknown = set(value) - allowed if allowed is not None else set()
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(allowed or ()))}")
    return value


@dataclass(frozen=True)
class PromptFormat:
    """How a problem becomes prompt token ids."""

    template: str = "{problem}\n"
    chat: bool = False
    system: str = ""
    add_bos: bool = True


@dataclass
class Experiment:
    """A parsed experiment: run-wide settings plus named guided configs."""

    name: str
    dataset: str
    models: dict[str, str]
    configs: dict[str, GuidedConfig]
    n: int = 100
    seed: int = 0
    max_tokens: int = 256
    problems: int | None = None
    levels: list[int] | None = None
    engine: str = "torch"
    prompt: PromptFormat = PromptFormat()
    engine_options: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, Any] | None = None  # the [cost] section, checked (None: not given)
    source: str = "<defaults>"


def config_id_for(policy: PolicySpec) -> str:
    """Readable default id: base, oracle, random-c4-k5, entropy-t1.5-k5-m4, margin-d0.2-k5-m4."""
    if policy.name in ("base", "oracle"):
        return policy.name
    if policy.name == "random":
        return f"random-c{policy.c}-k{policy.k}"
    if policy.name == "entropy":
        return f"entropy-t{policy.tau:g}-k{policy.k}-m{policy.max_c}"
    if policy.name == "judge":
        kind = "head" if policy.head else "a"
        return f"judge-{kind}{policy.alpha:g}-k{policy.k}-e{policy.every}-m{policy.max_c}"
    return f"margin-d{policy.delta:g}-k{policy.k}-m{policy.max_c}"


def temperature_suffix(entry: dict[str, Any]) -> str:
    """Id suffix for per-config temperatures (-bt0.6, -ot0), so variants of one policy get distinct ids."""
    suffix = ""
    if "base_temperature" in entry:
        suffix += f"-bt{float(entry['base_temperature']):g}"
    if "oracle_temperature" in entry:
        suffix += f"-ot{float(entry['oracle_temperature']):g}"
    return suffix


def _expand(entry: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Cartesian product over list-valued grid keys, each value type-checked."""
    unknown = set(entry) - POLICY_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(POLICY_KEYS)}")
    grid = {key: value if isinstance(value, list) else [value] for key, value in entry.items() if key in GRID_KEYS}
    empty = [key for key, values in grid.items() if not values]
    if empty:  # the product would be empty: the entry would vanish without a word
        raise ConfigError(f"{where}: {', '.join(empty)} {'is an empty list' if len(empty) == 1 else 'are empty lists'}; "
                          "give at least one value")
    if "id" in entry and any(len(v) > 1 for v in grid.values()):
        raise ConfigError(f"{where}: an explicit id cannot be used with a grid of values")
    for key, values in grid.items():
        for value in values:
            (_integer if key in INTEGER_KEYS else _number)(value, f"{where}: {key}")
    if "top_p" in entry:
        _number(entry["top_p"], f"{where}: top_p")
    for key in ("policy", "id", "head"):
        if key in entry:
            _string(entry[key], f"{where}: {key}")
    if "head" in entry and not entry["head"].strip():
        raise ConfigError(f"{where}: head is empty: give \"toy\" or a judge head file, or leave it out for the "
                          "oracle-probability judge")
    keys = list(grid)
    return [{**entry, **dict(zip(keys, combo))} for combo in itertools.product(*(grid[k] for k in keys))]


def build_configs(entries: list[dict[str, Any]], sampling: dict[str, Any], max_tokens: int, where: str) -> dict[str, GuidedConfig]:
    """GuidedConfigs keyed by id from the [[configs]] entries."""
    configs: dict[str, GuidedConfig] = {}
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: configs must be a list of tables ([[configs]] sections), got {entries!r}")
    for number, raw in enumerate(entries, start=1):
        place = f"{where}, [[configs]] #{number}"
        _table(raw, place)
        if "policy" not in raw:
            raise ConfigError(f"{place}: missing 'policy' (one of {', '.join(POLICY_NAMES)})")
        policy_name = raw["policy"] if isinstance(raw["policy"], str) else None  # else `_expand` says what is wrong
        stray = (set(raw) & POLICY_KEYS) - POLICY_PARAMETERS.get(policy_name, set(raw)) - SAMPLING_KEYS - {"policy", "id"}
        if stray:
            used = sorted(POLICY_PARAMETERS[raw["policy"]]) or ["none"]
            raise ConfigError(f"{place}: {', '.join(sorted(stray))} do{'es' if len(stray) == 1 else ''} not apply to "
                              f"policy {raw['policy']!r} (its settings: {', '.join(used)})")
        missing = [key for key in ("c", "k") if key in POLICY_PARAMETERS.get(policy_name, set()) and key not in raw]
        if missing:  # else the policy would name a made-up 0
            what = {"c": "c (oracle interventions per sample)", "k": "k (oracle tokens per intervention)"}
            raise ConfigError(f"{place}: policy {policy_name!r} needs {' and '.join(what[key] for key in missing)}; "
                              f"{'they are' if len(missing) > 1 else 'it is'} missing")
        idle = {"base": ("oracle_temperature", "oracle"), "oracle": ("base_temperature", "base")}.get(policy_name)
        if idle and idle[0] in raw:  # it would only change the config's id
            raise ConfigError(f"{place}: {idle[0]} does not apply to policy {policy_name!r} (it never samples the {idle[1]})")
        for entry in _expand(raw, place):
            try:
                policy = PolicySpec(
                    name=entry["policy"], k=int(entry.get("k", 0)), c=int(entry.get("c", 0)),
                    tau=entry.get("tau"), delta=entry.get("delta"),
                    max_c=None if entry.get("max_c") is None else int(entry["max_c"]),  # 3.0 is 3 (id and record)
                    ref_length=int(entry.get("ref_length", 100)),
                    alpha=entry.get("alpha"), every=int(entry.get("every", 8)), head=entry.get("head"),
                )
                config = GuidedConfig(
                    policy=policy,
                    base=SamplingParams(float(entry.get("base_temperature", sampling.get("base_temperature", 1.0))),
                                        float(entry.get("top_p", sampling.get("top_p", 1.0)))),
                    oracle=SamplingParams(float(entry.get("oracle_temperature", sampling.get("oracle_temperature", 1.0))),
                                          float(entry.get("top_p", sampling.get("top_p", 1.0)))),
                    max_tokens=max_tokens,
                )
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{place}: {exc}") from None
            if "id" in entry and not (isinstance(entry["id"], str) and CONFIG_ID_PATTERN.match(entry["id"])):
                raise ConfigError(f"{place}: id must be letters, digits and _.+-, starting with a letter or digit "
                                  f"(leave it out for the generated id), got {entry['id']!r}")
            ref_grid = isinstance(raw.get("ref_length"), list) and len(raw["ref_length"]) > 1  # a grid over it: in the id
            config_id = (entry.get("id") or config_id_for(policy) + (f"-r{policy.ref_length}" if ref_grid else "")
                         + temperature_suffix(entry))
            if config_id in configs:
                raise ConfigError(f"{place}: duplicate config id {config_id!r}")
            if len(config_id) > MAX_CONFIG_ID:  # it names the config's folder of shards
                raise ConfigError(f"{place}: config id {config_id[:40]!r}... has {len(config_id)} characters, at most "
                                  f"{MAX_CONFIG_ID}: give a shorter id (or saner values)")
            configs[config_id] = config
    if not configs:
        raise ConfigError(f"{where}: no [[configs]]")
    return configs


def parse_cost(raw: Any, source: str) -> dict[str, Any]:
    """The [cost] section: the default cost model for `study fit` and, for "price", the prices."""
    from fit.cost import COST_MODELS, Prices

    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [cost] must be a table")
    unknown = set(raw) - {"model", "prices"}
    if unknown:
        raise ConfigError(f"{source}: unknown [cost] key(s) {sorted(unknown)}; allowed: model, prices")
    model = raw.get("model", "flops")
    if model not in COST_MODELS:
        raise ConfigError(f"{source}: [cost] model must be one of {', '.join(COST_MODELS)}, got {model!r}")
    cost: dict[str, Any] = {"model": model}
    if "prices" in raw:
        try:
            prices = Prices.from_mapping(raw["prices"])
        except ValueError as exc:
            raise ConfigError(f"{source}: [cost] prices: {exc}") from None
        cost["prices"] = prices.to_mapping()
    elif model == "price":
        raise ConfigError(f"{source}: [cost] model 'price' needs prices = {{ base = {{ input = .., output = .. }}, oracle = {{ .. }} }}")
    return cost


def parse_experiment(data: dict[str, Any], source: str) -> Experiment:
    """Validate a config mapping (as read from TOML) into an Experiment."""
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {sorted(unknown)}")
    models = _table(data.get("models", {}), f"{source}: [models]", {"base", "oracle"})
    for role, name in models.items():
        if not _string(name, f"{source}: [models] {role}").strip():
            raise ConfigError(f"{source}: [models] {role} is empty: give a model path or hub name")
    if "base" not in models:
        raise ConfigError(f"{source}: [models] needs 'base' (and 'oracle' unless every config is policy 'base')")
    max_tokens = _integer(data.get("max_tokens", 256), f"{source}: max_tokens", least=1)
    n = _integer(data.get("n", 100), f"{source}: n", least=1)
    seed = _integer(data.get("seed", 0), f"{source}: seed")
    problems = _integer(data["problems"], f"{source}: problems", least=1) if "problems" in data else None
    levels = data.get("levels")
    if levels is not None:
        if not isinstance(levels, list) or not levels:
            raise ConfigError(f"{source}: levels must be a list of integers, e.g. levels = [1, 2], got {levels!r}")
        levels = [_integer(level, f"{source}: levels") for level in levels]
    sampling = _table(data.get("sampling", {}), f"{source}: [sampling]", SAMPLING_KEYS)
    for key, value in sampling.items():
        _number(value, f"{source}: [sampling] {key}")
        if key == "top_p" and not 0 < value <= 1:
            raise ConfigError(f"{source}: [sampling] top_p must be in (0, 1], got {value!r}")
        if key != "top_p" and (value < 0 or 0 < value < MIN_TEMPERATURE):
            raise ConfigError(f"{source}: [sampling] {key} must be 0 (greedy) or at least {MIN_TEMPERATURE:g}, got {value!r}")
    configs = build_configs(data.get("configs", []), sampling, max_tokens, source)
    if "oracle" not in models and any(c.policy.name != "base" for c in configs.values()):
        raise ConfigError(f"{source}: [models] needs 'oracle' for non-base policies")
    prompt = _table(data.get("prompt", {}), f"{source}: [prompt]", {"template", "chat", "system", "add_bos"})
    template = _string(prompt.get("template", "{problem}\n"), f"{source}: [prompt] template")
    marker = "\0study-problem\0"
    only_problem = f"{source}: [prompt] template may use only the field {{problem}} (write a literal brace as {{{{ or }}}})"
    try:
        fields = [(field, conversion) for _, field, _, conversion in string.Formatter().parse(template) if field is not None]
        filled = template.format(problem=marker) if all(f == "problem" and c in (None, "s") for f, c in fields) else None
    except (KeyError, IndexError, ValueError) as exc:  # a stray brace, a field inside a format spec
        raise ConfigError(f"{only_problem}: {type(exc).__name__}: {exc}") from None
    if filled is None:  # {problem.x}, {problem[0]}, {problem!r}, {answer}: not the problem's text
        odd = [f"{{{f}{'!' + c if c else ''}}}" for f, c in fields if f != "problem" or c not in (None, "s")]
        raise ConfigError(f"{only_problem}, without attribute, index or !conversion: got {', '.join(odd)}")
    if marker not in filled:  # "{{problem}}" is a literal "{problem}": the question would never be in the prompt
        raise ConfigError(f"{source}: [prompt] template must contain {{problem}} (where the problem goes; "
                          f"{{{{problem}}}} is the literal text {{problem}}), got {template!r}")
    chat = _boolean(prompt.get("chat", False), f"{source}: [prompt] chat")
    system = _string(prompt.get("system", ""), f"{source}: [prompt] system")
    if system and not chat:
        raise ConfigError(f"{source}: [prompt] system is a chat template's system message: it needs chat = true "
                          "(without a chat template, put the instruction in template)")
    engine = data.get("engine", "torch")
    if engine not in ("torch", "vllm"):
        raise ConfigError(f"{source}: engine must be 'torch' or 'vllm', got {engine!r}")
    name = _string(data.get("name", Path(source).stem), f"{source}: name")
    if not name.strip() or name.startswith(".") or any(sep in name for sep in ("/", "\\", "\0")):
        raise ConfigError(f"{source}: name names the run dir (runs/<name>-n<N>): it must be non-empty, without "
                          f"slashes, and not start with '.', got {name!r}")
    dataset = _string(data.get("dataset", "toy"), f"{source}: dataset")
    if not dataset.strip():
        raise ConfigError(f"{source}: dataset is empty: give a dataset name ({', '.join(DATASET_NAMES)}) or a file path")
    return Experiment(
        name=name, dataset=dataset, models=dict(models),
        configs=configs, n=n, seed=seed, max_tokens=max_tokens, problems=problems, levels=levels, engine=engine,
        prompt=PromptFormat(template, chat, system, _boolean(prompt.get("add_bos", True), f"{source}: [prompt] add_bos")),
        engine_options=dict(_table(data.get("engine_options", {}), f"{source}: engine_options")),
        cost=parse_cost(data["cost"], source) if "cost" in data else None, source=source,
    )


def load_experiment(path: Path) -> Experiment:
    """Read and validate a TOML experiment file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"experiment config not found: {path}")
    if not path.is_file():
        raise ConfigError(f"experiment config {path} is not a file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark (some Windows editors) is skipped
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (TOML must be UTF-8): {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    experiment = parse_experiment(data, str(path))
    if experiment.dataset not in DATASET_NAMES:
        experiment.dataset = _beside(path, experiment.dataset, Path.is_file)
    experiment.models = {role: _beside(path, name, Path.is_dir) for role, name in experiment.models.items()}  # else a hub id
    for config_id, config in experiment.configs.items():
        head = config.policy.head
        found = _beside(path, head, Path.is_file) if head and head != "toy" else head
        if found != head:
            experiment.configs[config_id] = dataclasses.replace(config, policy=dataclasses.replace(config.policy, head=found))
    return experiment


def _beside(config_path: Path, name: str, kind: Callable[[Path], bool]) -> str:
    """A relative path in the TOML (dataset file, model folder, judge head): as given where it exists from here, else
    beside the TOML where a `kind` (Path.is_file / Path.is_dir) is there, else as given (a hub id, or an error later)."""
    beside = config_path.parent / name
    return str(beside) if not Path(name).exists() and kind(beside) else name


DEFAULT_TOY_EXPERIMENT = Path(__file__).resolve().parent.parent / "experiments" / "toy.toml"


def default_experiment() -> Experiment:
    """The toy world's default experiment (experiments/toy.toml)."""
    return load_experiment(DEFAULT_TOY_EXPERIMENT)
