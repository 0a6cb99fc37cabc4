"""Helpers of the `rebel` experiment (the run itself is `keras-efficient reproduce rebel --quick`)."""

import numpy as np

from keras_efficient.backend import keras
from keras_efficient.experiments import registry
from keras_efficient.experiments.rebel import _client_subsets
from keras_efficient.experiments.rebel_costs import graph_flops


def test_registered_with_description():
    module = registry.load_experiment("rebel")
    assert module.DESCRIPTION and callable(module.run)


def test_graph_flops_counts_conv_and_dense():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(5, use_bias=False)(x))
    # Conv: 2·H·W·k²·Cin·Cout; Dense: 2·in·out (multiply-adds counted as 2 FLOPs).
    assert graph_flops(model, (8, 8, 3)) == 2 * 8 * 8 * 9 * 3 * 4 + 2 * 256 * 5


def test_client_subsets_follow_the_client_mix():
    rng = np.random.default_rng(0)
    y_train, y_test = rng.integers(0, 10, 2000), rng.integers(0, 10, 500)
    tr, te = _client_subsets(y_train, y_test, 0.05, 0, 400)
    train_mix = np.bincount(y_train[tr], minlength=10) / len(tr)
    test_mix = np.bincount(y_test[te], minlength=10) / len(te)
    assert np.abs(train_mix - test_mix).max() < 0.08
    assert set(np.flatnonzero(test_mix)) <= set(np.flatnonzero(train_mix))


def test_kumar_baseline_cuts_and_flops():
    from keras_efficient.experiments.rebel_costs import kumar_baseline, kumar_cuts
    from keras_efficient.models import cifar_resnet

    keras.utils.set_random_seed(0)
    teacher = cifar_resnet(8, num_classes=3, input_shape=(8, 8, 3), base_filters=4)
    assert kumar_cuts(teacher) == ["stem_relu", "stage1_block0", "stage2_block0",
                                   "stage3_block0"]
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(40, 8, 8, 3)).astype("float32")
    y = np.arange(40) % 3
    out = kumar_baseline(teacher, x, y, x[:10], 3, seed=0, grid=2)
    assert list(out) == kumar_cuts(teacher)
    # 2x2 grid: d = 4 * channels (4, 4, 8, 16); k-means with 24 clusters.
    assert [v["dim"] for v in out.values()] == [16, 16, 32, 64]
    for name, v in out.items():
        feat = teacher.get_layer(name).output
        pooled = keras.layers.AveragePooling2D(int(feat.shape[1]) // 2)(feat)
        prefix = keras.Model(teacher.input, keras.layers.Flatten()(pooled))
        assert v["flops"] == graph_flops(prefix, (8, 8, 3)) + 2 * 24 * v["dim"] + 2 * 24
        assert v["local"].shape == (10,) and v["confidence"].shape == (10,)
    flops = [v["flops"] for v in out.values()]
    assert flops == sorted(flops)


def test_table2_coverage_and_flops_ratios():
    from keras_efficient.experiments.rebel_costs import TABLE2_TARGETS, table2

    class _Classifier:
        def count_flops(self):
            return 100

    class _Model:
        classifier = _Classifier()

    labels = np.arange(100) % 5
    wrong = (labels + 1) % 5
    # Kumar cut A: local right on the 50 most confident samples, wrong elsewhere.
    conf_a = np.linspace(1.0, 0.01, 100)
    local_a = np.where(np.arange(100) < 50, labels, wrong)
    kumar = {"a": {"flops": 5000, "confidence": conf_a, "local": local_a},
             "b": {"flops": 9000, "confidence": conf_a, "local": labels}}
    teacher_pred = labels                                 # remote accuracy 1
    results = {"GMC diag": {"score": conf_a, "local": labels, "remote": labels,
                            "remote_accuracy": 1.0},
               "Linear": {"score": conf_a, "local": wrong, "remote": labels,
                          "remote_accuracy": 1.0}}
    rows, ratios = table2(kumar, teacher_pred, 1.0, results, {"GMC diag": _Model()}, 900,
                           labels)
    by_name = {r[0]: r for r in rows}
    assert set(by_name) == {"Kumar et al.: k-means after a", "Kumar et al.: k-means after b",
                            "ReBEL GMC diag"}
    # Cut a: all 50 right + k wrong ones local keeps (100 - k) / 100 >= target.
    expected_a = [(50 + int(np.floor(100 * (1 - t) + 1e-9))) / 100 for t in TABLE2_TARGETS]
    np.testing.assert_allclose(by_name["Kumar et al.: k-means after a"][2:5], expected_a)
    np.testing.assert_allclose(by_name["ReBEL GMC diag"][2:5], 1.0)
    assert by_name["ReBEL GMC diag"][1] == 1000
    # Only cut b (9000 FLOPs) serves everything locally: 9x ReBEL's FLOPs.
    assert ratios == {"ReBEL GMC diag": [9.0, 9.0, 9.0]}


def test_variants_pair_each_classifier_with_and_without_kl():
    from keras_efficient.experiments.rebel import _variants

    quick = dict(_variants(True))
    assert set(quick) == {"GMC full + KL", "GMC diag + KL", "GMC diag", "Linear", "Linear + KL"}
    assert quick["Linear + KL"]["beta"] > 0 and quick["Linear"]["beta"] == 0
    full = dict(_variants(False))
    for name in full:
        if name.endswith(" + KL"):
            assert name[:-5] in full and full[name[:-5]]["beta"] == 0


def test_default_data_is_shapes_and_quick_uses_a_subset():
    from keras_efficient.experiments import rebel

    assert rebel.OPTIONS["dataset"].default == "shapes"
    assert rebel.OPTIONS["train_size"].default is None          # full run: all 40,000
    assert 80 <= rebel.OPTIONS["train_size"].quick <= 5000
    assert rebel.OPTIONS["test_size"].quick <= 2000


def test_load_data_renders_only_the_requested_prefix_of_shapes():
    import io

    from keras_efficient.data import make_shapes32
    from keras_efficient.experiments import rebel
    from keras_efficient.experiments.context import ExperimentContext

    ctx = ExperimentContext("rebel", quick=True, options={"train_size": "130", "test_size": "40"},
                            stream=io.StringIO(), declared=rebel.OPTIONS)
    data = rebel._load_data(ctx)
    (x_train, y_train), (x_test, y_test) = make_shapes32(600, 500, seed=0)
    np.testing.assert_array_equal(data["x_train"], x_train[:130])
    np.testing.assert_array_equal(data["y_train"], y_train[:130])
    np.testing.assert_array_equal(data["x_test"], x_test[:40])
    assert data["num_classes"] == 10 and data["name"] == "shapes"
    assert np.bincount(data["y_train"], minlength=10).min() == 13
