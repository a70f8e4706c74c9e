"""The suite's command-line runs without paying the imports each time.

``python -m vae_lightning.train ...`` spends about 5 of its 6 seconds on this CPU importing torch,
Lightning (which imports torchmetrics, torchvision, scipy and matplotlib), Hydra and TensorBoard;
the tiny runs of the suite then train for a second. So the suite starts one server process that
imports those libraries once, and runs each command line in a fork of it: a child that sets the
command's folder, environment, ``sys.argv`` and output files, runs the module as ``__main__`` (as
``python -m`` does, through ``runpy``) and exits as that program would (its exit code, a traceback
and 1 for an uncaught exception, atexit handlers run). The entry points themselves are not imported
by the server: each child imports them as a new process does.

A command whose environment differs from the server's in what the interpreter or a library reads
at start-up (``PYTHON*``, OpenMP, CUDA, torch's settings) runs as a real process instead, and so do
the tests that signal, time or read a process (they start their own). ``VAE_LIGHTNING_TESTS_FORK=0``
turns the server off.
"""

import atexit
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# What the server imports: the libraries every entry point loads (not the entry points themselves).
PRELOAD = ["torch", "torchvision", "lightning", "hydra", "omegaconf", "rich", "tensorboard"]
# Environment variables read when the interpreter or a library starts, not when a command runs.
AT_START = ("PYTHON", "OMP_", "KMP_", "GOMP_", "MKL_", "OPENBLAS", "CUDA", "TORCH", "LD_")
FORK = os.environ.get("VAE_LIGHTNING_TESTS_FORK", "1") != "0" and hasattr(os, "fork")

SERVER = r"""
import json, os, signal, sys, time
for name in sys.argv[1:]:
    __import__(name)
replies = os.fdopen(os.dup(1), "w")


def serve():
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush(), sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            return request  # the child leaves the loop and becomes the command
        deadline = time.monotonic() + request["timeout"]
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                code = "timeout"
                break
            time.sleep(0.01)
        replies.write(json.dumps(code) + "\n")
        replies.flush()
    os._exit(0)


request = serve()
replies.close()
os.chdir(request["cwd"])
os.environ.clear()
os.environ.update(request["env"])
for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["out"], os.O_WRONLY),
                        (2, request["err"], os.O_WRONLY)):
    os.dup2(os.open(path, flags), fd)
sys.path[0] = os.getcwd()  # python -m puts the command's folder first
if "numpy" in sys.modules:  # a new process draws a new seed; random reseeds itself after a fork
    sys.modules["numpy"].random.seed()
sys.argv = [request["module"], *request["args"]]
import runpy
runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
"""


def command_env(env: dict | None = None) -> dict:
    """A command's environment: the suite's, with Python's warnings off and Hydra's full errors
    unset (as a user has it), then ``env``."""
    full = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    full.pop("HYDRA_FULL_ERROR", None)
    return full


def at_start(env: dict) -> dict:
    return {k: v for k, v in env.items() if k.startswith(AT_START)}


class ForkServer:
    """One server process; ``run`` forks it for a command line and waits for it."""

    def __init__(self, env: dict) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, *PRELOAD],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        atexit.register(self.close)

    def run(self, module, args, cwd, env, timeout) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", module, *args]
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            out.touch(), err.touch()
            request = {"module": module, "args": list(args), "cwd": str(cwd), "env": env}
            request.update(out=str(out), err=str(err), timeout=timeout)
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            reply = self.proc.stdout.readline()
            if not reply:
                raise RuntimeError(f"the tests' fork server ended while running {cmd}")
            code = json.loads(reply)
            stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        if code == "timeout":
            raise subprocess.TimeoutExpired(cmd, timeout, stdout, stderr)
        return subprocess.CompletedProcess(cmd, code, stdout, stderr)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


_server: ForkServer | None = None


def run_python_module(module: str, args, cwd: Path, env: dict, timeout: int):
    """``python -m module args`` in ``cwd`` with exactly ``env``, its output captured as text: in
    a fork of the server when ``env`` starts Python as the server's does, else as a new process."""
    global _server
    if FORK and at_start(env) == at_start(command_env()):
        if _server is None or _server.proc.poll() is not None:
            _server = ForkServer(command_env())
        return _server.run(module, args, cwd, env, timeout)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
