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

One Gaussian scale fixes the whole radial profile: if the squared radii m_i^2
are not chi-square_d distributed up to a factor (a network's residuals often
have heavier tails and a peakier centre than its predicted Gaussian), no s puts
both the 68.3% and the 95% ellipse right, and the MLE s over-covers one level
and under-covers the other. `family="student_t"` fits the multivariate
Student-t with the same mean and covariance s^2 Sigma_i and nu > 2 degrees of
freedom (scale matrix c^2 Sigma_i, c^2 = s^2 (nu - 2) / nu) by maximum
likelihood,

    ln p_i = ln Gamma((nu + d) / 2) - ln Gamma(nu / 2) - d/2 ln(nu pi)
             - 1/2 ln |Sigma_i| - d ln c - (nu + d) / 2 ln(1 + m_i^2 / (nu c^2)),

its two parameters setting both the width and the tail weight of the radius
distribution (m_i^2 / c^2 is d F(d, nu)). For fixed nu the optimal c^2 is the
fixed point of the EM update c^2 <- mean_i w_i m_i^2 / d,
w_i = (nu + d) / (nu + m_i^2 / c^2) (each step increases the likelihood); nu is
found on the profile likelihood, on a grid of ln(nu - 2) refined by golden-section
search (the fixed point itself is found by bisection: the EM iteration converges
slowly when the tails are heavy). nu -> infinity is the Gaussian fit, so the
Student-t fit is (up to the largest nu searched) never worse in validation
likelihood, at one more parameter.
"""

import math


import numpy as np

from keras_efficient.backend import keras, tf
from keras_efficient.calibration import _math
from keras_efficient.calibration.covariance_scale import CalibratedPredictor, CovarianceScale
from keras_efficient.utils.validation import check_bool, check_choice, check_float, check_int

__all__ = ["covariance_scale_mle", "fit_covariance_scale", "student_t_scale_mle"]

FAMILIES = ("gaussian", "student_t")


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


def _t_profile(m2, d, df, iterations=100):
    """(c^2, mean log-likelihood without the ln |Sigma| terms) of the best scale at `df`.

    The best c^2 solves (nu + d) mean_i m_i^2 / (nu c^2 + m_i^2) = d (the EM fixed
    point), whose left side falls monotonically from nu + d to 0 in u = ln c^2:
    bisection on u from a bracket that holds the root.
    """
    lo = math.log(float(np.min(m2))) - math.log(df) - 20.0
    hi = math.log(float(np.max(m2))) + 20.0
    for _ in range(iterations):
        u = 0.5 * (lo + hi)
        if (df + d) * float(np.mean(m2 / (df * math.exp(u) + m2))) > d:
            lo = u
        else:
            hi = u
    c2 = math.exp(0.5 * (lo + hi))
    ll = (math.lgamma(0.5 * (df + d)) - math.lgamma(0.5 * df) - 0.5 * d * math.log(df * math.pi)
          - 0.5 * d * math.log(c2) - 0.5 * (df + d) * float(np.mean(np.log1p(m2 / (df * c2)))))
    return c2, ll


def student_t_scale_mle(y_true, mean, covariance, max_df=1000.0):
    """Covariance scale s and degrees of freedom nu of the maximum-likelihood Student-t.

    Fits t_nu(mean_i, c^2 Sigma_i) (covariance s^2 Sigma_i, s^2 = c^2 nu / (nu - 2))
    to the targets by maximum likelihood over c > 0 and 2 < nu <= `max_df` (see
    the module docstring).

    Args:
      y_true, mean: arrays [..., d].
      covariance: array [..., d, d] (or one [d, d]).
      max_df: the largest nu considered (returned when the residuals look Gaussian:
        at nu = 1000 the t and the Gaussian coverages differ by < 0.1 point).

    Returns:
      (s, nu): floats.
    """
    max_df = check_float("max_df", max_df, low=2.5)
    y, mu, cov = _math.gaussian_arrays(y_true, mean, covariance)
    d = mu.shape[-1]
    m2 = _math.mahalanobis_squared(y, mu, cov).reshape(-1)
    if m2.size == 0:
        raise ValueError("student_t_scale_mle needs at least one example.")
    if not np.max(m2) > 0:
        raise ValueError("All residuals are zero: the covariance scale is undetermined.")
    m2 = np.maximum(m2, 1e-300)

    def profile(u):  # u = ln(nu - 2)
        return _t_profile(m2, d, 2.0 + math.exp(u))[1]

    grid = np.linspace(math.log(0.01), math.log(max_df - 2.0), 49)
    values = [profile(u) for u in grid]
    best = int(np.argmax(values))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = profile(a), profile(b)
    for _ in range(60):
        if fa >= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = profile(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = profile(b)
        if hi - lo < 1e-7:
            break
    candidates = [(values[best], grid[best]), (fa, a), (fb, b)]
    u = max(candidates)[1]
    df = 2.0 + math.exp(u)
    c2 = _t_profile(m2, d, df)[0]
    return float(math.sqrt(c2 * df / (df - 2.0))), float(df)


def _fit(y, mean, cov, family, per_output):
    """(scale, df) of the chosen family (df None for the Gaussian)."""
    if family == "student_t":
        if per_output:
            raise ValueError("per_output=True is only available with family='gaussian' (a "
                             "Student-t takes one scale). Received: family='student_t', "
                             "per_output=True")
        return student_t_scale_mle(y, mean, cov)
    scale = covariance_scale_mle(y, mean, cov, per_output=per_output)
    return (scale.tolist() if per_output else scale), None


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
                         batch_size=32, family="gaussian"):
    """Fits the covariance scale on validation data; returns the calibrated predictor.

    The mean is kept and Sigma -> s^2 Sigma (or D Sigma D, D = diag(s), with
    `per_output=True`), s minimising the validation Gaussian NLL
    (`covariance_scale_mle`). Fit on data not used for training: on the training
    set a network's residuals are too small and the scale comes out too small.

    Which family: "gaussian" (one parameter) when the validation radii are close
    to chi-square (check `reliability_curve` on the validation split: the
    recalibrated curve then lies on the diagonal at every level). When they are
    not -- typically the 68.3% ellipse over-covered while the 95% one is
    under-covered after the Gaussian fit, i.e. heavier tails -- use
    "student_t": it fits s and the degrees of freedom nu
    (`student_t_scale_mle`) and serves a multivariate Student-t with the same
    mean and covariance s^2 Sigma; score it with the `df=` argument of
    `coverage`, `reliability_curve`, and with `student_t_nll` /
    `crps_student_t`. With a few hundred validation examples nu is loosely
    determined (a tail weight is estimated from the few largest residuals), so
    report it with its coverage on held-out data.

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
      family: "gaussian" (serve N(mean, s^2 Sigma)) or "student_t" (serve
        t_nu with covariance s^2 Sigma; one scale only).

    Returns:
      For a model: a `CalibratedPredictor` wrapping it (a registered Keras model
      that saves and reloads with the fitted scale, and nu for a Student-t). For
      predictions: a `CovarianceScale` layer holding the fitted scale (and nu:
      its `initial_df`); call it on a `(mean, covariance)` pair or a
      distribution.
    """
    check_bool("per_output", per_output)
    check_choice("family", family, FAMILIES)
    num_samples = check_int("num_samples", num_samples, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    predictions = _as_predictions(model_or_predictions)
    if predictions is not None:
        scale, df = _fit(validation_data, predictions[0], predictions[1], family, per_output)
        return CovarianceScale(scale, df=df)
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
    scale, df = _fit(y_val, mean, cov, family, per_output)
    return CalibratedPredictor(model_or_predictions, scale=scale, num_samples=num_samples, df=df)
