"""`towerkit train --local-workers N`: exit statuses propagated, every worker stopped."""

import json
import os
import signal
import subprocess
import sys
import time

from towerkit.cli.local_cluster import free_ports, worker_tf_config


def _workers_alive(marker: str) -> list:
    ps = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if marker in line and "towerkit.cli.main" in line]


def test_tf_config_of_each_worker():
    ports = free_ports(3)
    assert len(set(ports)) == 3
    config = json.loads(worker_tf_config(ports, 2))
    assert config == {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                      "task": {"type": "worker", "index": 2}}


def test_failing_workers_status_is_returned_with_one_line(tmp_path):
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from towerkit.cli.local_cluster import "
         "run_local_workers; sys.exit(run_local_workers(sys.argv[1:], 2))",
         "train", "--model", "no_such_recipe", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "of 2 exited with status 2; stopped the other workers" in proc.stderr


def test_interrupt_stops_every_worker(tmp_path):
    marker = str(tmp_path / "interrupted-run")
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    launcher = subprocess.Popen(
        [sys.executable, "-m", "towerkit.cli.main", "train", "--model", "two_tower", "--out",
         marker, "--local-workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while (len(_workers_alive(marker)) < 3 and time.monotonic() < deadline
               and launcher.poll() is None):
            time.sleep(0.5)  # the launcher and its 2 workers
        assert len(_workers_alive(marker)) == 3, launcher.poll()
        time.sleep(2)
        launcher.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    assert launcher.returncode == 130, err[-2000:]
    assert "interrupted; stopped all 2 workers" in err
    assert _workers_alive(marker) == []
