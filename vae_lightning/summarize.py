"""One table per sweep: ``python -m vae_lightning.summarize SWEEP_DIR`` writes summary.csv and
summary.md, and the columns of TensorBoard's HParams table for the sweep.

A row per job folder (``<sweep>/<job>/.hydra/overrides.yaml``): the overrides that vary across
the sweep, final val/test metrics from its metrics.json, epochs, wall time (run_info.json),
status and error line, sorted by ``val/loss`` (failed runs last). ``SweepSummary`` is the Hydra
callback (conf/hydra/default.yaml) that writes it when a multirun ends.
"""

import csv
import io
import json
import math
import sys
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vae_lightning.boundary import user_error
from vae_lightning.callbacks.tensorboard import write_sweep_experiment
from vae_lightning.runs.record import RUN_INFO

METRICS = ("val/loss", "val/recon", "val/kl", "best/val_loss", "test/loss", "test/recon", "test/kl")
BITS = ("val/bpd", "test/bpd")  # columns of their own when a job's likelihood is discrete
SORT_BY = "val/loss"


class Damaged(Exception):
    """A run file exists but cannot be read."""


def _read_json(path: Path) -> dict:
    """The file's JSON object; {} when it does not exist; Damaged when it exists but cannot be
    read."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise Damaged(f"{path.name} cannot be read ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise Damaged(f"{path.name} holds no JSON object")
    return data


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The sweep's job folders (those holding .hydra/overrides.yaml), in job-number order."""
    jobs = [p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")]
    return sorted(
        jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)
    )


def read_row(job: Path) -> dict:
    try:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
    except (OSError, yaml.YAMLError):
        overrides = []
    damaged = []
    try:
        result = _read_json(job / "metrics.json")
    except Damaged as e:
        result, damaged = {}, [str(e)]
    try:
        info = _read_json(job / RUN_INFO)
    except Damaged as e:
        info, damaged = {}, [*damaged, str(e)]
    metrics = result.get("metrics", {})
    if not isinstance(metrics, dict):
        metrics, damaged = {}, [*damaged, "metrics.json has no metrics"]
    elif not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values()):
        metrics, damaged = {}, [*damaged, "metrics.json holds a metric that is not a number"]
    status = (
        "damaged" if damaged else info.get("status") or ("completed" if result else "incomplete")
    )
    row = {
        "job": job.name,
        "overrides": dict(o.split("=", 1) if "=" in o else (o, "") for o in overrides),
        "status": status,
        **{m: metrics.get(m, math.nan) for m in METRICS + BITS},
        "run_name": result.get("run_name") or "",
        "tags": " ".join(result.get("tags") or []),
        "epochs": result.get("epochs", ""),
        "wall_time_s": info.get("wall_time_s", ""),
        "run_dir": str(job),
        "error": "; ".join(damaged) or info.get("error", ""),
        # the job's settings ({} for a job that did not finish)
        "hparams": result.get("hparams") or {},
    }
    return row


def collect(sweep_dir: str | Path) -> tuple[list[str], list[dict]]:
    """(the override keys that differ between runs, the rows sorted by val/loss with failures
    last)."""
    rows = [read_row(job) for job in job_dirs(Path(sweep_dir))]
    keys = list(dict.fromkeys(k for r in rows for k in r["overrides"]))
    varying = [k for k in keys if len({r["overrides"].get(k) for r in rows}) > 1] or keys
    ok = [r for r in rows if r["status"] == "completed" and not math.isnan(r[SORT_BY])]
    rows = sorted(ok, key=lambda r: r[SORT_BY]) + [r for r in rows if r not in ok]
    return varying, rows


def table(varying: list[str], rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and string cells: one column per varying override, then results."""
    bits = [m for m in BITS if any(not math.isnan(r[m]) for r in rows)]
    header = [
        "job",
        *varying,
        "status",
        *METRICS,
        *bits,
        "epochs",
        "wall_time_s",
        "run_name",
        "tags",
        "run_dir",
        "error",
    ]

    def cell(value) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.6g}"
        return str(value)

    cells = [
        [cell(r["overrides"].get(k, "")) if k in varying else cell(r[k]) for k in header]
        for r in rows
    ]
    return header, cells


def write_summary(
    sweep_dir: str | Path, collected: tuple[list[str], list[dict]] | None = None
) -> tuple[Path, Path]:
    """Write <sweep_dir>/summary.csv and summary.md (from ``collect(sweep_dir)``, unless given);
    return their paths."""
    sweep_dir = Path(sweep_dir)
    varying, rows = collected or collect(sweep_dir)
    header, cells = table(varying, rows)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *cells])
    csv_path, md_path = sweep_dir / "summary.csv", sweep_dir / "summary.md"
    csv_path.write_text(buffer.getvalue())
    common = {k: v for r in rows[:1] for k, v in r["overrides"].items() if k not in varying}
    failed = sum(r["status"] != "completed" for r in rows)
    lines = [
        f"# Sweep {sweep_dir.name}: {len(rows)} runs, {failed} failed, sorted by {SORT_BY}",
        "",
        *(
            [f"Common overrides: `{' '.join(f'{k}={v}' for k, v in common.items())}`", ""]
            if common
            else []
        ),
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells),
    ]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


class SweepSummary(Callback):
    """Hydra callback: write the sweep's summary when a multirun ends; exit 2 if any job did not
    complete."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        varying, rows = collect(config.hydra.sweep.dir)
        csv_path, _ = write_summary(config.hydra.sweep.dir, (varying, rows))
        print(f"sweep summary: {csv_path} (and summary.md)", file=sys.stderr)
        write_sweep_experiment(config.hydra.sweep.dir, [r["hparams"] for r in rows if r["hparams"]])
        bad = [r for r in rows if r["status"] != "completed"]
        if bad:
            print(
                f"error: {len(bad)} of {len(rows)} jobs did not complete "
                f"(job {', '.join(r['job'] for r in bad)}): "
                f"see {csv_path.with_suffix('.md')}",
                file=sys.stderr,
            )
            sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print("usage: python -m vae_lightning.summarize SWEEP_DIR  (or: vae-summarize SWEEP_DIR)\n")
        print(__doc__)
        return 0
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print(
            "error: give one sweep folder: python -m vae_lightning.summarize SWEEP_DIR "
            "(a folder of job folders written by -m)",
            file=sys.stderr,
        )
        return 2
    if not job_dirs(Path(argv[0])):
        print(
            f"error: {argv[0]} holds no job folders (<job>/.hydra/overrides.yaml)", file=sys.stderr
        )
        return 2
    try:
        varying, rows = collect(argv[0])
        csv_path, md_path = write_summary(argv[0], (varying, rows))
        write_sweep_experiment(argv[0], [r["hparams"] for r in rows if r["hparams"]])
    except OSError as e:
        error = user_error(e)
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(md_path.read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
