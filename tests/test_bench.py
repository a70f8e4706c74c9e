"""benchmarks/bench_train.py (``make bench``) runs its rows side by side and prints the ratios the
README reports; pythae's row is an optional dependency: it runs when pythae is installed and says
in one line that it is skipped when not. Speeds are not asserted (timing on a shared CPU)."""

import importlib.util
import json
import math
import subprocess
import sys

from tests.conftest import REPO
from vae_lightning.data.synthetic import make_mnist_root


def test_the_bench_runs_its_rows_and_prints_the_overhead_ratios(tmp_path):
    root = make_mnist_root(tmp_path / "data", folder="FashionMNIST", n_train=5600, n_test=100)
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_train.py"),
            f"--data={root}",
            "--epochs=2",
            "--rows=plain_bf16_val,pythae,default_command",
            f"--out={out}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    ratio = next(x for x in lines if x.startswith("default command / plain bf16 loop"))
    assert float(ratio.rsplit(":", 1)[1]) > 0, ratio
    rows = {row["key"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) >= {"tutorial", "plain_bf16_val", "default_command"}
    for key in ("plain_bf16_val", "default_command"):  # 600 training images, 2 epochs: learned
        assert math.isfinite(rows[key]["val_loss"]) and rows[key]["val_loss"] < 784 * math.log(2)
        assert len(rows[key]["epoch_times"]) == 2
    if importlib.util.find_spec("pythae") is None:
        skipped = [x for x in lines if "pythae" in x and "skipped" in x]
        assert skipped and skipped[0].endswith(
            "skipped: pythae is not installed (pip install pythae)"
        ), proc.stdout[-2000:]
        assert "pythae" not in rows
    else:
        assert (
            rows["pythae"]["val_loss"] < 784 * math.log(2)
            and len(rows["pythae"]["epoch_times"]) == 2
        )
        assert any(x.startswith("default command / pythae's trainer (epoch time): ") for x in lines)
