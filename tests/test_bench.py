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
            "--rows=plain_bf16_val,lightning_floor,pythae,default_command",
            "--repeat=2",
            f"--out={out}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    measured = json.loads(out.read_text())["rows"]
    rows = {row["key"]: row for row in measured}
    assert set(rows) >= {"tutorial", "plain_bf16_val", "lightning_floor", "default_command"}
    # --repeat=2: the chosen rows twice, in turn (the tutorial's once); each ratio the median of
    # the two runs' ratios, with their range
    assert [r["key"] for r in measured if r["key"] != "pythae"] == [
        "tutorial",
        *["plain_bf16_val", "lightning_floor", "default_command"] * 2,
    ]
    for what, num, den in (
        ("default command / plain bf16 loop", "default_command", "plain_bf16_val"),
        ("Lightning's bare loop / plain bf16 loop", "lightning_floor", "plain_bf16_val"),
        ("default command / Lightning's bare", "default_command", "lightning_floor"),
    ):
        line = next(x for x in lines if x.startswith(what))
        pair = [
            next(r for r in measured if r["key"] == num and r["repeat"] == rep)["sec_per_epoch"]
            / next(r for r in measured if r["key"] == den and r["repeat"] == rep)["sec_per_epoch"]
            for rep in (0, 1)
        ]
        assert "(median of 2 runs in turn, " in line, line
        assert float(line.rsplit(":", 1)[1]) == round(sum(pair) / 2, 3), (line, pair)
    # 600 training images, 2 epochs: learned
    for key in ("plain_bf16_val", "lightning_floor", "default_command"):
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
        assert any(
            x.startswith("default command / pythae's trainer (epoch time) (median of 2")
            for x in lines
        )
