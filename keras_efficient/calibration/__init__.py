"""Calibration of Gaussian predictions: coverage, reliability, proper scores, Keras metrics.

    from keras_efficient import calibration

    calibration.coverage(y, mean, cov, 0.683)            # joint ellipse, chi2_d quantile
    calibration.coverage(y, mean, cov, 0.683, marginal=True)   # per-output intervals
    calibration.reliability_curve(y, mean, cov)           # expected vs observed coverage
    calibration.predictive_moments(sample_means, sample_covs)   # a BNN's predictive moments
    model.compile(..., metrics=[calibration.Coverage(0.683), calibration.GaussianNLL()])
"""

from keras_efficient.calibration.coverage import coverage, probability_integral_transform
from keras_efficient.calibration.metrics import Coverage, GaussianNLL, gaussian_moments
from keras_efficient.calibration.predictive import mixture_nll, predictive_moments
from keras_efficient.calibration.reliability import (
    DEFAULT_LEVELS,
    plot_reliability,
    reliability_curve,
)
from keras_efficient.calibration.scores import crps_gaussian, gaussian_nll

__all__ = [
    "Coverage",
    "DEFAULT_LEVELS",
    "GaussianNLL",
    "coverage",
    "crps_gaussian",
    "gaussian_moments",
    "gaussian_nll",
    "mixture_nll",
    "plot_reliability",
    "predictive_moments",
    "probability_integral_transform",
    "reliability_curve",
]
