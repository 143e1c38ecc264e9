"""`towerkit train --local-workers N`: N multi-worker training processes on this machine.

Each worker is `towerkit train` with the same flags, `--distribute multi-worker` and its own
`TF_CONFIG` (a cluster of N workers on free loopback ports; worker 0 is the chief, which
writes the run). The workers run in their own process groups; when one fails, or on Ctrl-C
or SIGTERM, every group is stopped (SIGTERM, then SIGKILL after a grace period) and the
first failure's exit status is returned with one line naming the worker and its log.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Optional, Sequence

__all__ = ["free_ports", "run_local_workers", "worker_tf_config"]

GRACE_SECONDS = 10.0


def free_ports(n: int) -> list:
    """`n` distinct TCP ports free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def worker_tf_config(ports: Sequence[int], index: int) -> str:
    """The `TF_CONFIG` of worker `index` of a loopback cluster on `ports`."""
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def _status_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _last_line(path: pathlib.Path) -> str:
    try:
        lines = [l.strip() for l in path.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    errors = [l for l in lines if "error" in l.lower()]
    return (errors or lines or [""])[-1][:300]


def _stop(processes: list, grace: float = GRACE_SECONDS) -> None:
    for p in processes:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for p in processes:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in processes:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # also any child the worker left behind
        except (ProcessLookupError, PermissionError):
            pass
        p.wait()


def run_local_workers(worker_argv: Sequence[str], num_workers: int,
                      log_dir: Optional[str] = None, env: Optional[dict] = None) -> int:
    """Runs `python -m towerkit.cli.main <worker_argv>` as `num_workers` workers; returns the
    exit status (0 when every worker succeeded, else the first failure's: `128 + signal` for
    a killed worker).

    Args:
      worker_argv: The `train ...` arguments of every worker (with `--distribute multi-worker`).
      num_workers: int >= 2.
      log_dir: Where workers 1.. write their output (default: a new temporary directory);
        the chief's goes to this process's stdout/stderr.
      env: Base environment (default: `os.environ`).
    """
    ports = free_ports(num_workers)
    log_dir = pathlib.Path(log_dir or tempfile.mkdtemp(prefix="towerkit-workers-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    base = dict(os.environ if env is None else env)
    processes, logs = [], []
    # SIGTERM and SIGINT both stop every worker, also where SIGINT was inherited as ignored
    # (a launcher started in the background of a non-interactive shell).
    previous = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[signum] = signal.signal(signum, _raise_interrupt)
        except ValueError:  # not the main thread: no handlers, the caller's Ctrl-C only
            break
    try:
        for index in range(num_workers):
            worker_env = {**base, "TF_CONFIG": worker_tf_config(ports, index)}
            log = log_dir / f"worker{index}.log"
            logs.append(log)
            out = None if index == 0 else open(log, "wb")  # noqa: SIM115
            try:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "towerkit.cli.main", *worker_argv], env=worker_env,
                    stdout=out, stderr=subprocess.STDOUT if out else None,
                    start_new_session=True))
            finally:
                if out is not None:
                    out.close()
        while True:
            codes = [p.poll() for p in processes]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                index, code = failed[0]
                _stop(processes)
                where = (f" (its log: {logs[index]}: {_last_line(logs[index])})"
                         if index else "")
                print(f"towerkit train: error: worker {index} of {num_workers} "
                      f"{_status_text(code)}; stopped the other workers{where}",
                      file=sys.stderr, flush=True)
                return code if code > 0 else 128 - code
            if all(c == 0 for c in codes):
                return 0
            time.sleep(0.2)
    except KeyboardInterrupt:
        _stop(processes)
        print(f"towerkit train: interrupted; stopped all {len(processes)} workers",
              file=sys.stderr, flush=True)
        return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if any(p.poll() is None for p in processes):
            _stop(processes)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt
