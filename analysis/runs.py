"""Training run directories (config.json, metrics.jsonl, summary.json) read into plain records."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.errors import InputError
from analysis.files import Record, opt, opt_num, read_json, read_jsonl

__all__ = [
    "RunDir",
    "load_run",
    "load_runs",
    "BREAKDOWN",
    "ALIASES",
    "as_percent",
]

# Known spellings of each field we read, the documented one first (docs/schema-train.md, schema version 1):
# config.json keeps the flags under "config" and the derived plan under "plan"; summary.json is flat.
ALIASES: dict[str, tuple[str, ...]] = {
    "K": ("plan.world_size", "world_size", "K", "config.K"),
    "H": ("config.H", "H"),
    "Hb": ("config.Hb", "Hb"),
    "algorithm": ("config.algorithm", "algorithm"),
    "model": ("config.model", "model"),
    "dataset": ("config.dataset", "dataset.name", "dataset"),
    "B_loc": ("config.batch_size", "batch_size", "B_loc"),
    "compress": ("config.compress", "compression.scheme"),  # docs/schema-compress.md
    "wall_s": ("wall_s",),
    "tta_s": ("time_to_target.wall_s", "time_to_acc_s"),
    "target_acc": ("target_acc", "config.target_acc"),
    # summary.json's "prediction" is reserved for the simulator (a later issue); these are its likely shapes.
    "predicted_s": ("prediction.wall_s", "prediction.predicted_s", "prediction.predicted_wall_s",
                    "predicted.wall_s", "predicted_s"),
}

# The stacked-bar components in drawing order: (label, alternatives); the first alternative with a key
# present is used, summing its present keys. Train counters first, the simulator's names after.
BREAKDOWN: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    ("compute", (("compute_s",),)),
    ("straggler (emulated)", (("straggle_s",),)),
    ("comm block / intra-node", (("comm_s_block",), ("comm_intra_s",))),
    ("comm global / inter-node", (("comm_s_global",), ("comm_inter_s",))),
    ("waiting", (("wait_s_block", "wait_s_global"), ("wait_s",))),
    ("evaluation", (("eval_s",),)),
)
# Where run totals are read from, in order: rank 0's totals (wall_s is rank 0's too), then flat keys.
_TOTALS = ("totals_rank0", "")


@dataclass(kw_only=True)
class RunDir:
    """One training run: its resolved configuration, its metric records and (when finished) its summary."""

    path: Path
    config: Record
    metrics: list[Record] = field(default_factory=list)
    summary: Record | None = None

    def cfg(self, key: str, default: Any = None) -> Any:
        """A configuration value by canonical name, looked up in config.json, then summary.json."""
        value = opt(self.config, ALIASES.get(key, (key,)))
        if value is None and self.summary is not None:
            value = opt(self.summary, ALIASES.get(key, (key,)))
        return default if value is None else value

    def effective_h(self) -> tuple[int, int]:
        """(H, H^b) as the run synchronises: mini-batch SGD syncs every step, H^b matters only when hierarchical."""
        alg = self.cfg("algorithm")
        H = 1 if alg == "minibatch" else int(self.cfg("H", 1))
        Hb = int(self.cfg("Hb", 1)) if alg == "hierarchical" else 1
        return H, Hb

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)

    @property
    def label(self) -> str:
        """Short legend text: algorithm, K, H (H^b when hierarchical, the compression when on); else the name."""
        parts = []
        alg = self.cfg("algorithm")
        if alg:
            parts.append(str(alg))
        for key, sym in (("K", "K"), ("H", "H"), ("Hb", "Hᵇ")):
            value = self.cfg(key)
            if key == "H" and alg == "minibatch":
                continue  # mini-batch SGD syncs every step whatever H says
            if key == "Hb" and alg != "hierarchical":
                continue
            if value is not None:
                parts.append(f"{sym}={value}")
        compress = self.cfg("compress")
        if compress not in (None, "none"):
            parts.append(str(compress))
        return " ".join(parts) if parts else self.name

    def records(self, kind: str) -> list[Record]:
        """Metric records of one kind ("epoch" or "step"), in file order."""
        return [r for r in self.metrics if opt(r, "kind") == kind]

    def summary_num(self, key: str) -> float | None:
        if self.summary is None:
            return None
        return opt_num(self.summary, ALIASES.get(key, (key,)))

    def wall_s(self) -> float | None:
        """Total wall time: summary.json, else the last record's cumulative wall_s."""
        value = self.summary_num("wall_s")
        if value is None and self.metrics:
            value = opt_num(self.metrics[-1], ALIASES["wall_s"])
        return value

    def breakdown(self) -> dict[str, float]:
        """Seconds spent per component (compute, comm per level, waiting, ...) over the whole run.

        From summary.json's ``totals_rank0`` (else its flat keys), else from the last metric record
        (counters are cumulative since the start of the run). A component that is absent counts as
        0; if every one is absent that is an error naming the run.
        """
        sources: list[Mapping[str, Any]] = []
        if self.summary is not None:
            sources += [self.summary[k] if k else self.summary for k in _TOTALS
                        if not k or isinstance(self.summary.get(k), Mapping)]
        sources += self.metrics[-1:]
        for source in sources:
            found = {label: _sum_first(source, alternatives) for label, alternatives in BREAKDOWN}
            if any(v is not None for v in found.values()):
                return {label: (v or 0.0) for label, v in found.items()}
        raise InputError(f"{self.path}: no time breakdown (compute_s, comm_s_LEVEL, wait_s_LEVEL) "
                         f"in summary.json or metrics.jsonl")


def _sum_first(rec: Mapping[str, Any], alternatives: tuple[tuple[str, ...], ...]) -> float | None:
    for keys in alternatives:
        values = [opt_num(rec, k) for k in keys]
        if any(v is not None for v in values):
            return sum(v for v in values if v is not None)
    return None


def load_run(path: str | Path) -> RunDir:
    """Read a run directory; metrics.jsonl is required, config.json and summary.json are optional."""
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"run directory {str(root)!r} does not exist or is not a directory")
    metrics_path = root / "metrics.jsonl"
    if not metrics_path.is_file():
        raise InputError(f"{root}: missing metrics.jsonl (not a train run directory?)")
    config = read_json(root / "config.json") if (root / "config.json").is_file() else Record.of({}, str(root))
    summary = read_json(root / "summary.json") if (root / "summary.json").is_file() else None
    metrics = read_jsonl(metrics_path, allow_empty=True)
    for rec in metrics:
        kind = opt(rec, "kind")
        if kind not in ("step", "epoch"):
            raise InputError(f"{rec.source}: key 'kind' must be 'step' or 'epoch', got {kind!r}")
    _check_complete(root, metrics, summary)
    return RunDir(path=root, config=config, metrics=metrics, summary=summary)


def _check_complete(root: Path, metrics: list[Record], summary: Record | None) -> None:
    """A completed run's metrics.jsonl must end with the final epoch record: never plot fewer epochs than ran."""
    if summary is None or opt(summary, "status") != "completed":
        return
    done = opt_num(summary, "steps_done")
    if done is None:
        return
    last = max((opt_num(r, "step", -1.0) or -1.0 for r in metrics if opt(r, "kind") == "epoch"), default=-1.0)
    if last < done - 1:
        raise InputError(f"{root}: metrics.jsonl ends before the run did (last epoch record at step {last:.0f}, "
                         f"summary.json says {done:.0f} steps were done): the file was cut; plotting it would "
                         f"drop epochs (restore it, or re-run the training)")


def load_runs(paths: Sequence[str | Path]) -> list[RunDir]:
    """Several run directories, in the order given; duplicate paths are an error."""
    if not paths:
        raise InputError("no run directories given (expected one or more RUN_DIR)")
    seen: set[Path] = set()
    runs = []
    for p in paths:
        resolved = Path(p).resolve()
        if resolved in seen:
            raise InputError(f"run directory {str(p)!r} given twice")
        seen.add(resolved)
        runs.append(load_run(p))
    return runs


def as_percent(values: Sequence[float | None]) -> list[float | None]:
    """Accuracies in percent: values all within [0, 1] are taken as fractions and scaled by 100; None stays."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    scale = 100.0 if finite and max(finite) <= 1.0 and min(finite) >= 0.0 else 1.0
    return [None if v is None else v * scale for v in values]
