"""Reliability curves: observed coverage against the nominal level, and their plot."""

import numpy as np

from keras_efficient.calibration import _math
from keras_efficient.calibration.coverage import (
    _abs_standardized,
    _interval_half_widths,
    _radii,
    _radius_thresholds,
)
from keras_efficient.utils.validation import check_bool

__all__ = ["DEFAULT_LEVELS", "reliability_curve", "plot_reliability"]

#: Nominal levels of a reliability curve: 0.05, 0.10, ..., 0.95, plus 0.683 and 0.954
#: (the 1- and 2-sigma contents of a 1-D Gaussian).
DEFAULT_LEVELS = tuple(sorted(set(np.round(np.arange(1, 20) * 0.05, 2).tolist()) | {0.683, 0.954}))


def reliability_curve(y_true, mean, covariance, levels=DEFAULT_LEVELS, marginal=False, df=None):
    """Expected vs observed coverage of Gaussian predictions at several levels.

    Observed coverage at level p is `coverage(y_true, mean, covariance, p,
    marginal)`: the fraction of targets inside the level-p ellipsoid (joint,
    chi-square quantile) or each output's central interval (marginal). A
    calibrated predictor lies on the diagonal; below it is over-confident.

    Args:
      y_true, mean: arrays [..., d].
      covariance: array [..., d, d] (or one [d, d]).
      levels: nominal levels in (0, 1).
      marginal: per-output intervals instead of the joint ellipsoid.
      df: None (Gaussian) or the degrees of freedom nu > 2 of Student-t
        predictions (regions as in `coverage(..., df=nu)`).

    Returns:
      dict: `expected` float64 [L] (the levels), `observed` float64 [L] (joint) or
      [L, d] (marginal), `num_examples` (int) and `marginal` (bool).
    """
    levels = _math.check_levels(levels)
    check_bool("marginal", marginal)
    df = None if df is None else _math.check_df(df)
    y, mu, cov = _math.gaussian_arrays(y_true, mean, covariance)
    d = mu.shape[-1]
    if marginal:
        abs_z = _abs_standardized(y, mu, cov, df).reshape(-1, d)
        z = _interval_half_widths(levels, df)
        observed = (abs_z[None, :, :] <= z[:, None, None]).mean(axis=1)
    else:
        m2 = _radii(y, mu, cov, df).reshape(-1)
        thresholds = _radius_thresholds(levels, d, df)
        observed = (m2[None, :] <= thresholds[:, None]).mean(axis=1)
    return {"expected": levels, "observed": observed, "num_examples": int(y.size // d),
            "marginal": marginal}


def plot_reliability(y_true, mean, covariance, levels=DEFAULT_LEVELS, marginal=False, ax=None,
                     label=None, output_names=None, df=None):
    """Plots a reliability curve (observed vs nominal coverage) with the diagonal.

    matplotlib is imported here, on first use (`pip install 'keras_efficient[experiments]'`).

    Args:
      y_true, mean, covariance, levels, marginal, df: as for `reliability_curve`.
      ax: a matplotlib Axes to draw on; None: a new figure.
      label: legend label of the joint curve (default "joint (d = ...)"); with
        `marginal=True`, a prefix of the per-output labels.
      output_names: names of the outputs for the marginal curves (default
        "output 0", ...).

    Returns:
      The matplotlib Figure.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plot_reliability needs matplotlib: `pip install matplotlib` (or "
                          "`pip install 'keras_efficient[experiments]'`).") from None
    curve = reliability_curve(y_true, mean, covariance, levels=levels, marginal=marginal, df=df)
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
    else:
        fig = ax.figure
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="calibrated")
    expected, observed = curve["expected"], curve["observed"]
    if marginal:
        d = observed.shape[1]
        names = list(output_names) if output_names is not None else [
            "output {}".format(k) for k in range(d)]
        if len(names) != d:
            raise ValueError("`output_names` must have one name per output ({}). Received: "
                             "output_names={!r}".format(d, output_names))
        for k in range(d):
            text = names[k] if label is None else "{} {}".format(label, names[k])
            ax.plot(expected, observed[:, k], marker="o", markersize=3, label=text)
    else:
        d = np.asarray(mean).shape[-1]
        ax.plot(expected, observed, marker="o", markersize=3,
                label=label if label is not None else "joint (d = {})".format(d))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("observed coverage")
    ax.set_title("reliability ({} examples)".format(curve["num_examples"]))
    ax.legend(loc="upper left", fontsize="small")
    return fig
