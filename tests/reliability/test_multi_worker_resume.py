"""Multi-worker fault tolerance: a worker killed, the job restarted, equal to uninterrupted.

Two MultiWorkerMirroredStrategy workers on 127.0.0.1 (free ports, loopback only)
train Dense -> AdaptiveDropout(seed=3) -> Dense under op determinism
(`_multi_worker_scenario.py`). In the interrupted job worker 1 kills itself
with SIGKILL in epoch 2; worker 0, blocked in a collective, is then killed too
(as a cluster manager restarting a job would). A new job on new ports resumes
with `keras.callbacks.BackupAndRestore` and must end with the weights of an
uninterrupted job. Every process is bounded by a timeout.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_efficient.distribute import local_cluster_tf_configs

_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_multi_worker_scenario.py")
_TIMEOUT = 300


def _env(tf_config):
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "grpc_proxy", "all_proxy")}
    env.update(TF_CONFIG=tf_config, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               no_proxy="127.0.0.1,localhost", NO_PROXY="127.0.0.1,localhost")
    return env


def _start(mode, workdir):
    return [subprocess.Popen([sys.executable, _SCRIPT, mode, str(workdir)], env=_env(config),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for config in local_cluster_tf_configs(2)]


def _finish(procs, timeout=_TIMEOUT):
    try:
        return [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


def _results(procs, outputs):
    out = []
    for p, (stdout, stderr) in zip(procs, outputs):
        lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
        assert p.returncode == 0 and lines, (p.returncode, stdout[-2000:], stderr[-4000:])
        out.append(json.loads(lines[-1][len("RESULT "):]))
    return out


def _weights(workdir, mode, index):
    data = np.load(os.path.join(str(workdir), "{}_w{}.npz".format(mode, index)))
    return [data["arr_{}".format(k)] for k in range(len(data.files))]


@pytest.mark.slow
def test_worker_killed_job_restarted_equals_uninterrupted(tmp_path):
    procs = _start("reference", tmp_path)
    reference = _results(procs, _finish(procs))
    assert [r["replicas"] for r in reference] == [2, 2]

    procs = _start("killed", tmp_path)
    try:
        deadline = time.monotonic() + _TIMEOUT
        while procs[1].poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert procs[1].returncode == -signal.SIGKILL, procs[1].returncode
        # Worker 0 cannot finish without its peer: the job is torn down and restarted.
        if procs[0].poll() is None:
            procs[0].kill()
    finally:
        _finish(procs, timeout=60)
    assert os.listdir(os.path.join(str(tmp_path), "backup")), "no backup was written"

    procs = _start("restarted", tmp_path)
    restarted = _results(procs, _finish(procs))
    for r in restarted:
        assert r["epochs"] == [2, 3], r  # resumed after epoch 1, not started over
        assert r["iterations"] == reference[0]["iterations"] == 16, (r, reference)
        assert r["step"] == reference[0]["step"] == 16, (r, reference)
    want = _weights(tmp_path, "reference", 0)
    for index in (0, 1):
        got = _weights(tmp_path, "restarted", index)
        assert len(got) == len(want)
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(want, got))
        assert diff <= 1e-6, (index, diff)
