"""What the harness costs a training start, measured up to the first ``loss.backward()``.

    python benchmarks/harness_stats.py [--data ../shared/data] [--runs 3]

Prints, for the checkout it is run from:
  package lines          lines of vae_lightning/*.py (blank lines included), and of the boundary
                         modules; statements (Python's, whatever the layout) beside them
  modules before step    project modules that ran code before the first backward (sys.setprofile)
  constructors           __init__ calls per class (DataModule, model, network, optimizer,
                         Trainer...)
  time to first step     wall seconds from spawning the command to its first backward (median of
                         --runs), measured without the profiler
"""

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path.cwd()
BOUNDARY = ("boundary.py", "cli.py", "errors.py", "runs/preflight.py", "runs/folder.py")
OVERRIDES = ["trainer.max_epochs=1", "test=false", "print_config=false", "threads=1"]


def lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def statements(path: Path) -> int:
    return sum(isinstance(node, ast.stmt) for node in ast.walk(ast.parse(path.read_text())))


def probe(profile: bool) -> None:
    """Run the training entry point in this process;
    at the first backward print the figures and exit."""
    sys.path.insert(0, str(ROOT))  # the checkout it is run from, whatever is installed
    import torch

    package = str(ROOT / "vae_lightning")
    modules, built = set(), {}
    counted = (
        "vae_lightning.",
        "lightning.pytorch.trainer.trainer",
        "lightning.pytorch.loggers.",
        "lightning.pytorch.callbacks.",
        "torch.optim.",
    )

    def tracer(frame, event, arg):
        if event != "call":
            return
        code = frame.f_code
        if code.co_filename.startswith(package):
            modules.add(os.path.relpath(code.co_filename, package))
        if code.co_name == "__init__":
            obj = frame.f_locals.get("self")
            kind = type(obj)
            if kind.__module__.startswith(counted) and not kind.__name__.startswith("_"):
                built.setdefault(kind.__name__, set()).add(id(obj))

    def first_backward(self, *args, **kwargs):
        sys.setprofile(None)
        print(
            json.dumps(
                {
                    "at": time.time(),
                    "modules": sorted(modules),
                    "constructors": {k: len(v) for k, v in sorted(built.items())},
                }
            ),
            flush=True,
        )
        os._exit(0)

    torch.Tensor.backward = first_backward
    from vae_lightning import train

    if profile:
        sys.setprofile(tracer)
    sys.argv = ["vae_lightning.train", *sys.argv[sys.argv.index("--") + 1 :]]
    train.main()
    print(json.dumps({"error": "no backward ran"}))


def spawn(profile: bool, data: str, run_dir: Path) -> dict:
    command = [
        sys.executable,
        __file__,
        "--probe" + ("-profile" if profile else ""),
        "--",
        *OVERRIDES,
        f"data.root={data}",
        f"hydra.run.dir={run_dir}",
    ]
    started = time.time()
    out = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "DATA_DIR": data}
    )
    last = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not last:
        sys.exit(f"the probe printed no figures:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    figures = json.loads(last[-1])
    figures["seconds"] = figures.pop("at") - started
    return figures


def main() -> None:
    if "--probe" in sys.argv or "--probe-profile" in sys.argv:
        return probe("--probe-profile" in sys.argv)
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--data", default=os.environ.get("DATA_DIR", str(ROOT.parent / "shared" / "data"))
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    package = ROOT / "vae_lightning"
    files = sorted(package.rglob("*.py"))
    with tempfile.TemporaryDirectory() as tmp:
        profiled = spawn(True, args.data, Path(tmp) / "profiled")
        times = [
            spawn(False, args.data, Path(tmp) / f"run{i}")["seconds"] for i in range(args.runs)
        ]
    boundary = {name: lines(package / name) for name in BOUNDARY if (package / name).is_file()}
    print(
        json.dumps(
            {
                "package_lines": sum(lines(f) for f in files),
                "package_statements": sum(statements(f) for f in files),
                "boundary_statements": sum(statements(package / n) for n in boundary),
                "boundary_lines": sum(boundary.values()),
                "boundary": boundary,
                "modules_before_first_backward": len(profiled["modules"]),
                "modules": profiled["modules"],
                "constructors": profiled["constructors"],
                "seconds_to_first_backward": round(statistics.median(times), 2),
                "runs": [round(t, 2) for t in times],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
