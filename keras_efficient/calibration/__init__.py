"""Calibration of Gaussian predictions: coverage, reliability, scores, metrics, recalibration.

    from keras_efficient import calibration

    calibration.coverage(y, mean, cov, 0.683)            # joint ellipse, chi2_d quantile
    calibration.coverage(y, mean, cov, 0.683, marginal=True)   # per-output intervals
    calibration.reliability_curve(y, mean, cov)           # expected vs observed coverage
    calibration.predictive_moments(sample_means, sample_covs)   # a BNN's predictive moments
    model.compile(..., metrics=[calibration.Coverage(0.683), calibration.GaussianNLL()])
    predictor = calibration.fit_covariance_scale(model, (x_val, y_val))   # Sigma -> s^2 Sigma
    predictor = calibration.fit_covariance_scale(model, (x_val, y_val), family="student_t")
    calibration.coverage(y, mean, cov, 0.683, df=predictor.df)   # Student-t regions
"""

from keras_efficient.calibration.coverage import coverage, probability_integral_transform
from keras_efficient.calibration.covariance_scale import CalibratedPredictor, CovarianceScale
from keras_efficient.calibration.metrics import Coverage, GaussianNLL, gaussian_moments
from keras_efficient.calibration.predictive import mixture_nll, predictive_moments
from keras_efficient.calibration.recalibration import (
    covariance_scale_mle,
    fit_covariance_scale,
    student_t_scale_mle,
)
from keras_efficient.calibration.reliability import (
    DEFAULT_LEVELS,
    plot_reliability,
    reliability_curve,
)
from keras_efficient.calibration.scores import (
    crps_gaussian,
    crps_student_t,
    gaussian_nll,
    student_t_nll,
)

__all__ = [
    "CalibratedPredictor",
    "CovarianceScale",
    "Coverage",
    "DEFAULT_LEVELS",
    "GaussianNLL",
    "covariance_scale_mle",
    "coverage",
    "crps_gaussian",
    "crps_student_t",
    "fit_covariance_scale",
    "gaussian_moments",
    "gaussian_nll",
    "mixture_nll",
    "plot_reliability",
    "predictive_moments",
    "probability_integral_transform",
    "reliability_curve",
    "student_t_nll",
    "student_t_scale_mle",
]
