"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 train and agree."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_efficient import distribute

_WORKER = textwrap.dedent("""
    import os, sys
    os.environ["TF_CONFIG"] = sys.argv[1]
    import numpy as np
    from keras_efficient.backend import keras
    from keras_efficient.distribute import get_strategy, static_batches
    from keras_efficient.losses import NegativeLogLikelihood
    from keras_efficient.models.galaxy_estimator import galaxy_shape_estimator

    strategy = get_strategy("multi_worker")
    assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = galaxy_shape_estimator(input_shape=(16, 16, 6), filters=(4, 8))
        model.compile(keras.optimizers.SGD(1e-2), loss=NegativeLogLikelihood())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 16, 16, 6)).astype(np.float32)
    y = (0.3 * np.tanh(x[:, 6:10, 6:10, :2].mean(axis=(1, 2)))).astype(np.float32)
    history = model.fit(static_batches(x, y, batch_size=8), epochs=1, steps_per_epoch=3,
                        verbose=0)
    np.savez(sys.argv[2], loss=np.array(history.history["loss"]), *model.get_weights())
""")


def test_local_cluster_configs_are_valid():
    configs = distribute.local_cluster_tf_configs(3)
    parsed = [distribute.parse_tf_config(c) for c in configs]
    workers = parsed[0]["cluster"]["worker"]
    assert len(set(workers)) == 3 and all(w.startswith("127.0.0.1:") for w in workers)
    assert [p["task"]["index"] for p in parsed] == [0, 1, 2]
    with pytest.raises(ValueError, match="ports"):
        distribute.local_cluster_tf_configs(2, ports=[1234])


@pytest.mark.slow  # about 30 s on 2 cores: two fresh TensorFlow processes
def test_two_workers_train_and_agree(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    configs = distribute.local_cluster_tf_configs(2)  # free ports picked now
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    outs = [str(tmp_path / "w{}.npz".format(i)) for i in range(2)]
    procs = [subprocess.Popen([sys.executable, str(script), configs[i], outs[i]], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        results = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    w0, w1 = np.load(outs[0]), np.load(outs[1])
    keys = sorted(k for k in w0.files if k != "loss")
    assert keys == sorted(k for k in w1.files if k != "loss") and keys
    assert np.all(np.isfinite(w0["loss"]))
    for key in keys:
        np.testing.assert_allclose(w0[key], w1[key], rtol=1e-6, atol=1e-7)
