"""How far a run directory is: per config, the samples and blocks done, the engine time they took,
and the engine time the rest should take at the measured rate (read from the manifest and the
shards' footers; nothing is loaded or sampled)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sampling import store
from sampling.runner import plan_blocks


@dataclass(frozen=True)
class ConfigStatus:
    """One config's progress in a run directory."""

    config: str
    samples_done: int
    samples_total: int
    blocks_done: int
    blocks_total: int
    timed_samples: int  # done samples whose shard records the engine's time
    engine_seconds: float  # the engine time of those samples

    @property
    def seconds_per_sample(self) -> float | None:
        """Measured engine seconds per sample (None before any timed block)."""
        return self.engine_seconds / self.timed_samples if self.timed_samples else None

    @property
    def seconds_left(self) -> float | None:
        """Engine seconds the samples still to draw should take at the measured rate (None: no rate yet)."""
        rate = self.seconds_per_sample
        return None if rate is None else rate * (self.samples_total - self.samples_done)


def block_progress(run_dir: Path) -> dict[str, tuple[int, int, int, int]]:
    """Per config of the manifest (in its order): samples done, planned, blocks done, planned (no shard is read)."""
    run_dir = Path(run_dir)
    manifest = store.read_manifest(run_dir)
    if not all(key in manifest for key in ("blocking", "configs", "n")):
        raise store.RunDirError(f"{run_dir}: the manifest has no sampling plan (blocking, configs, n): not written by `study sample`")
    problem_ids = [p.id for p in store.read_problems(run_dir)]
    blocking = manifest["blocking"]
    configs = list(manifest["configs"])
    blocks = plan_blocks(problem_ids, configs, manifest["n"], blocking["block_size"], blocking["group_size"])
    finished = store.finished_blocks(run_dir)
    out = {}
    for config in configs:
        mine = [b for b in blocks if b.config_id == config]
        done = [b for b in mine if (config, b.key) in finished]
        out[config] = (sum(b.size for b in done), sum(b.size for b in mine), len(done), len(mine))
    return out


def run_status(run_dir: Path) -> list[ConfigStatus]:
    """Per config of the manifest (in its order): planned vs finished blocks and samples, measured engine time."""
    timings = store.config_timings(Path(run_dir))
    return [ConfigStatus(config, *progress, *timings.get(config, (0, 0.0)))
            for config, progress in block_progress(run_dir).items()]


def unfinished_configs(run_dir: Path) -> list[str]:
    """'CONFIG (done/planned)' for each config whose sampling is unfinished ([] for a run dir without a sampling plan)."""
    try:
        progress = block_progress(Path(run_dir))
    except store.RunDirError:  # a run dir written by another tool: no plan to compare with
        return []
    return [f"{config} ({done:,}/{total:,})" for config, (done, total, _, _) in progress.items() if done < total]
