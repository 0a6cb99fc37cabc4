"""Post-hoc recalibration: the covariance scale that minimises the validation NLL.

With residuals r_i = y_i - mu_i, predicted covariances Sigma_i, n examples and d
outputs, the validation NLL of N(mu_i, s^2 Sigma_i) is, up to a constant,

    n d ln s + sum_i m_i^2 / (2 s^2),      m_i^2 = r_i^T Sigma_i^-1 r_i,

minimised in closed form by s^2 = mean_i m_i^2 / d. With one scale per output,
Sigma_i -> D Sigma_i D (D = diag(s)), write t = 1/s:

    f(t) = -n sum_k ln t_k + 1/2 t^T A t,     A = sum_i Sigma_i^-1 o (r_i r_i^T)

(o the elementwise product). A is positive semi-definite (a sum of Hadamard
products of PSD matrices), so f is strictly convex on t > 0 and Newton's method
(gradient -n / t + A t, Hessian n diag(1 / t^2) + A) with step halving finds its
unique minimum in a few steps; for diagonal covariances it is the closed form
s_k^2 = mean_i r_ik^2 / Sigma_i,kk. (NumPy only: SciPy is not a dependency of
the library.)
"""

import numpy as np

from keras_efficient.backend import keras, tf
from keras_efficient.calibration import _math
from keras_efficient.calibration.covariance_scale import CalibratedPredictor, CovarianceScale
from keras_efficient.utils.validation import check_bool, check_int

__all__ = ["covariance_scale_mle", "fit_covariance_scale"]


def covariance_scale_mle(y_true, mean, covariance, per_output=False, max_iterations=100,
                         tolerance=1e-10):
    """The covariance scale(s) that minimise the Gaussian NLL of `y_true`.

    Args:
      y_true, mean: arrays [..., d].
      covariance: array [..., d, d] (or one [d, d]).
      per_output: False: one s for Sigma -> s^2 Sigma (closed form,
        s^2 = mean m^2 / d); True: one s_k per output for Sigma -> D Sigma D
        (Newton's method, see the module docstring).
      max_iterations, tolerance: of Newton's method (it stops when no t_k changes by
        more than `tolerance` relative).

    Returns:
      float (one scale) or float64 array [d].
    """
    check_bool("per_output", per_output)
    max_iterations = check_int("max_iterations", max_iterations, low=1)
    y, mu, cov = _math.gaussian_arrays(y_true, mean, covariance)
    d = mu.shape[-1]
    y, mu, cov = y.reshape(-1, d), mu.reshape(-1, d), cov.reshape(-1, d, d)
    n = y.shape[0]
    if n == 0:
        raise ValueError("covariance_scale_mle needs at least one example.")
    chol = _math.cholesky(cov)
    r = y - mu
    z = _math.whiten(r, chol)
    single = float(np.sqrt(np.mean(np.sum(z * z, axis=-1)) / d))
    if not single > 0:
        raise ValueError("All residuals are zero: the covariance scale is undetermined.")
    if not per_output:
        return single
    precision = np.linalg.inv(cov)
    a = np.einsum("nij,ni,nj->ij", precision, r, r) / n  # A / n

    def objective(t):
        return -np.sum(np.log(t)) + 0.5 * t @ a @ t

    t = np.full(d, 1.0 / single)
    value = objective(t)
    for _ in range(max_iterations):
        grad = -1.0 / t + a @ t
        hess = np.diag(1.0 / t ** 2) + a
        step = np.linalg.solve(hess, grad)
        size = 1.0
        while True:
            candidate = t - size * step
            if np.all(candidate > 0):
                new_value = objective(candidate)
                if new_value <= value + 1e-15 * abs(value):
                    break
            size *= 0.5
            if size < 1e-10:
                candidate, new_value = t, value
                break
        converged = np.max(np.abs(candidate - t) / t) < tolerance or size < 1e-10
        t, value = candidate, new_value
        if converged:
            break
    return 1.0 / t


def _as_predictions(obj):
    """(mean, covariance) arrays from a predict_with_samples dict or a pair, else None."""
    if isinstance(obj, dict) and "mean" in obj and "covariance" in obj:
        return np.asarray(obj["mean"]), np.asarray(obj["covariance"])
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return np.asarray(obj[0]), np.asarray(obj[1])
    return None


def _predictor_moments(predictor, x, batch_size):
    @tf.function
    def moments(batch):
        dist = predictor(batch, training=False)
        return dist.mean(), dist.covariance()

    means, covs = [], []
    for start in range(0, len(x), batch_size):
        m, c = moments(tf.convert_to_tensor(x[start:start + batch_size]))
        means.append(m.numpy())
        covs.append(c.numpy())
    return np.concatenate(means), np.concatenate(covs)


def fit_covariance_scale(model_or_predictions, validation_data, per_output=False, num_samples=1,
                         batch_size=32):
    """Fits the covariance scale on validation data; returns the calibrated predictor.

    The mean is kept and Sigma -> s^2 Sigma (or D Sigma D, D = diag(s), with
    `per_output=True`), s minimising the validation Gaussian NLL
    (`covariance_scale_mle`). Fit on data not used for training: on the training
    set a network's residuals are too small and the scale comes out too small.

    Args:
      model_or_predictions: a Keras model returning a distribution with `mean()`
        and `covariance()` (e.g. `galaxy_shape_estimator`), or its predictions on
        the validation inputs: a `(mean, covariance)` pair or the dict of
        `models.predict_with_samples` (its `mean` and `covariance`).
      validation_data: `(x_val, y_val)` for a model; `y_val` for predictions.
      per_output: one scale per output instead of one overall.
      num_samples: for a model: forward passes per input, averaged by the law of
        total covariance (use > 1 for a Bayesian model; the returned predictor
        serves with the same number).
      batch_size: inputs per forward pass (model only).

    Returns:
      For a model: a `CalibratedPredictor` wrapping it (a registered Keras model
      that saves and reloads with the fitted scale). For predictions: a
      `CovarianceScale` layer holding the fitted scale; call it on a
      `(mean, covariance)` pair or a distribution.
    """
    check_bool("per_output", per_output)
    num_samples = check_int("num_samples", num_samples, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    predictions = _as_predictions(model_or_predictions)
    if predictions is not None:
        scale = covariance_scale_mle(validation_data, predictions[0], predictions[1],
                                     per_output=per_output)
        return CovarianceScale(scale.tolist() if per_output else scale)
    if not isinstance(model_or_predictions, keras.Model):
        raise TypeError(
            "Invalid value received for argument `model_or_predictions`. Expected a Keras model, "
            "a (mean, covariance) pair or a dict with 'mean' and 'covariance'. Received: "
            "model_or_predictions={!r}".format(model_or_predictions))
    if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
        raise ValueError("For a model, `validation_data` must be a pair (x_val, y_val). "
                         "Received: {!r}".format(type(validation_data)))
    x_val, y_val = np.asarray(validation_data[0]), np.asarray(validation_data[1])
    if len(x_val) == 0 or len(x_val) != len(y_val):
        raise ValueError("`validation_data` must hold the same non-zero number of inputs and "
                         "targets. Received: {} inputs, {} targets".format(len(x_val), len(y_val)))
    unscaled = CalibratedPredictor(model_or_predictions, scale=1.0, num_samples=num_samples)
    mean, cov = _predictor_moments(unscaled, x_val, batch_size)
    scale = covariance_scale_mle(y_val, mean, cov, per_output=per_output)
    return CalibratedPredictor(model_or_predictions, scale=scale.tolist() if per_output else scale,
                               num_samples=num_samples)
