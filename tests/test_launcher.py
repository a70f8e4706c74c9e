"""The suite's fork server (tests/launcher.py) runs a command line as a new process would."""

import json
import os
import subprocess
import sys

from tests.launcher import command_env, run_python_module

PROBE = """
import json, os, sys
import numpy
print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "path0": sys.path[0],
                  "env": os.environ.get("PROBE_VALUE"), "warnoptions": sys.warnoptions,
                  "main": __name__, "spec": __spec__.name, "pid": os.getpid(),
                  "draw": float(numpy.random.rand())}))
print("to stderr", file=sys.stderr)
if sys.argv[1] == "raise":
    raise ValueError("a researcher's bug")
sys.exit(int(sys.argv[1]))
"""


def test_a_forked_command_runs_as_a_new_process_would(tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    env = command_env({"PROBE_VALUE": "seen"})
    real = subprocess.run(
        [sys.executable, "-m", "probe", "3", "x y"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    forked = [run_python_module("probe", ["3", "x y"], tmp_path, env, 60) for _ in range(2)]
    assert [p.returncode for p in (real, *forked)] == [3, 3, 3]
    got = [json.loads(p.stdout) for p in (real, *forked)]
    assert len({os.getpid(), *(g.pop("pid") for g in got)}) == 4  # four processes
    draws = [g.pop("draw") for g in got]
    assert draws[1] != draws[2]  # each fork draws its own seed, as a new process does
    assert (
        got[0]
        == got[1]
        == got[2]
        == {
            "argv": ["3", "x y"],
            "cwd": str(tmp_path),
            "path0": str(tmp_path),
            "env": "seen",
            "warnoptions": ["ignore"],
            "main": "__main__",
            "spec": "probe",
        }
    )
    assert real.stderr == forked[0].stderr == "to stderr\n"


def test_an_uncaught_exception_shows_its_traceback_and_exits_1(tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    proc = run_python_module("probe", ["raise"], tmp_path, command_env(), 60)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ValueError: a researcher's bug" in proc.stderr


def test_a_command_that_starts_python_differently_runs_as_a_real_process(tmp_path):
    """Python reads PYTHONWARNINGS when it starts, so such a command cannot be a fork."""
    (tmp_path / "probe.py").write_text(PROBE)
    proc = run_python_module(
        "probe", ["0"], tmp_path, command_env({"PYTHONWARNINGS": "default"}), 60
    )
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["warnoptions"] == ["default"]
