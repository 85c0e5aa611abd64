"""Sweep bookkeeping: one `result.json` per job, a report over a sweep folder, a Hydra end-of-sweep summary.

Each job folder gets `result.json` = {"status": "ok"|"failed", "overrides": [...], "metric": name,
"value": float|null, "metrics": {...}, "error": str|null}. `report()` reads them back, best first.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stylegan_transfer import atomic

log = logging.getLogger(__name__)
RESULT_FILE = "result.json"


@dataclass
class JobResult:
    folder: Path
    status: str
    overrides: dict[str, str]
    metric: str
    value: float
    error: str | None

    @property
    def number(self) -> str:
        """The job number Hydra gave the folder (`<n>_<overrides>`)."""
        return self.folder.name.split("_", 1)[0]

    @property
    def ok(self) -> bool:
        return self.status == "ok" and math.isfinite(self.value)


def write_result(
    folder: Path,
    *,
    overrides: list[str],
    metric: str,
    metrics: dict[str, float] | None,
    error: BaseException | None = None,
) -> Path:
    value = None if metrics is None else metrics.get(metric)
    while error is not None and error.__cause__ is not None:  # Hydra wraps constructor errors
        error = error.__cause__
    payload: dict[str, Any] = {
        "status": "ok" if error is None else getattr(error, "status", "failed"),  # or "interrupted"
        "overrides": list(overrides),
        "metric": metric,
        "value": None if value is None or not math.isfinite(value) else float(value),
        "metrics": metrics or {},
        "error": None if error is None else f"{type(error).__name__}: {error}",
    }
    return atomic.write_text(folder / RESULT_FILE, json.dumps(payload, indent=2))


def _parse_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key.lstrip("+~")] = value
    return out


def read_results(sweep_dir: str | Path) -> list[JobResult]:
    """Every job under `sweep_dir` (folders holding result.json), best first, failures last."""
    jobs = []
    for path in sorted(Path(sweep_dir).glob(f"*/{RESULT_FILE}")):
        data = json.loads(path.read_text())
        value = data.get("value")
        jobs.append(
            JobResult(
                folder=path.parent,
                status=data.get("status", "failed"),
                overrides=_parse_overrides(data.get("overrides", [])),
                metric=data.get("metric", ""),
                value=float("nan") if value is None else float(value),
                error=data.get("error"),
            )
        )
    return sorted(jobs, key=lambda j: (not j.ok, j.value if j.ok else 0.0))


def swept_keys(jobs: list[JobResult]) -> list[str]:
    """Override keys whose value differs between jobs (the swept parameters)."""
    keys = sorted({k for job in jobs for k in job.overrides})
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def report_table(jobs: list[JobResult]) -> str:
    """A Markdown table: rank, job number, status, metric value, swept parameters."""
    if not jobs:
        return "no jobs found (no */result.json)"
    keys = swept_keys(jobs)
    metric = next((j.metric for j in jobs if j.metric), "metric")
    header = ["rank", "job", "status", metric, *keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, job in enumerate(jobs, 1):
        value = f"{job.value:.5g}" if job.ok else "—"
        reason = " ".join((job.error or "no metric").split()).replace("|", "/")
        status = "ok" if job.ok else f"FAILED: {reason[:160]}"
        lines.append(
            "| "
            + " | ".join([str(rank), job.number, status, value, *(job.overrides.get(k, "") for k in keys)])
            + " |"
        )
    return "\n".join(lines)


def report_plot(jobs: list[JobResult], path: Path) -> Path | None:
    """One panel per swept parameter: the metric of each successful job against that parameter's value."""
    ok = [j for j in jobs if j.ok]
    keys = swept_keys(jobs)
    if not ok or not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        raw = [j.overrides.get(key, "") for j in ok]
        try:
            xs: list[Any] = [float(v) for v in raw]
        except ValueError:
            categories = sorted(set(raw))
            xs = [categories.index(v) for v in raw]
            ax.set_xticks(range(len(categories)), categories, rotation=30)
        ax.scatter(xs, [j.value for j in ok])
        ax.set_xlabel(key)
        ax.set_ylabel(ok[0].metric)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{len(ok)} of {len(jobs)} jobs succeeded")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def report(sweep_dir: str | Path) -> tuple[str, Path | None]:
    """Write sweep_report.md and sweep_report.png into `sweep_dir`; return (table, png path)."""
    sweep_dir = Path(sweep_dir)
    jobs = read_results(sweep_dir)
    table = report_table(jobs)
    atomic.write_text(sweep_dir / "sweep_report.md", table + "\n")
    png = report_plot(jobs, sweep_dir / "sweep_report.png")
    return table, png


try:  # Hydra is a dependency of training, not of this module's report functions
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object  # type: ignore[assignment,misc]


class SweepSummary(_HydraCallback):
    """Hydra callback: after a multirun, print the report table and write it beside the jobs."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        table, png = report(sweep_dir)
        failed = [j for j in read_results(sweep_dir) if not j.ok]
        log.info("sweep results (%s):\n%s", sweep_dir / "sweep_report.md", table)
        if png:
            log.info("plot: %s", png)
        if failed:
            log.warning("%d job(s) failed: %s", len(failed), ", ".join(j.folder.name for j in failed))


def main(argv: list[str] | None = None) -> int:
    """`stylegan-sweep-report <sweep dir>`: the report of a finished (or partial) sweep, again."""
    parser = argparse.ArgumentParser(
        prog="stylegan-sweep-report",
        description="Summarise a sweep: every job's swept overrides and metric, best first (failed jobs "
        "last, with their error); writes sweep_report.md and sweep_report.png into the sweep folder.",
    )
    parser.add_argument("sweep_dir", type=Path, help="the multirun folder (hydra.sweep.dir)")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(
            f"error: {args.sweep_dir} is not a folder; pass the multirun folder of a sweep", file=sys.stderr
        )
        return 2
    table, png = report(args.sweep_dir)
    print(table)
    print(f"\nwritten: {args.sweep_dir / 'sweep_report.md'}" + (f", {png}" if png else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
