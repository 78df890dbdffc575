"""The ``forecast`` feature group: walk-forward gradient-boosted predictions of the next bars.

A supervised classifier (scikit-learn's ``HistGradientBoostingClassifier``) predicts the direction
of the return over the next ``horizon`` bars, in three classes: down / flat / up. Its per-bar
outputs are the "ML predictions" part of an agent's state:

``forecast_signal``
    the predicted class as -1 (down), 0 (flat), 1 (up);
``forecast_confidence``
    the predicted probability of that class;
``forecast_target``
    the expected ``horizon``-bar simple return: the sum over the classes of probability × the
    mean label return of that class in the model's training set.

**Inputs.** The group is self-contained: it computes a fixed set of causal base inputs from the
bars itself (:data:`BASE_INPUTS`, see :func:`forecast_inputs`), plus the bar columns named in
``extra_inputs`` when the bars have them (by default ``alpha_signal``, the published signal of a
``planted`` synthetic market). It does not read the other groups of the spec, so its values do not
depend on what else the spec holds.

**Labels.** Sample ``i`` has the forward return ``r_i = close[i + k] / close[i] - 1`` (``k`` =
``horizon``), known at the close of bar ``i + k``. Its class is up when ``r_i > thr_i``, down when
``r_i < -thr_i``, flat otherwise, with ``thr_i = flat_threshold × rvol_i × sqrt(k)`` (``rvol`` the
std of one-bar log returns over ``vol_window`` bars, known at bar ``i``) when
``threshold_mode="vol"``, or ``thr_i = flat_threshold`` when ``"abs"``. The default 0.43 gives
roughly equal thirds for Gaussian returns.

**Walk-forward.** Refit bars are anchored to the first bar: the first refit ``r0`` is the first
bar at which ``min_train`` labelled samples are available, then every ``refit_every`` bars. The
model fitted at refit ``r`` sees only samples with ``i + k <= r - 1 - embargo``: every label it
learns from was complete at the close of bar ``r - 1`` (the last ``k`` samples are purged, and
``embargo`` more), and at most the ``max_train`` most recent of them. It gives the forecasts of
bars ``r .. r + refit_every - 1``. Before ``r0`` the outputs are ``0 / 1/3 / 0`` (no opinion:
flat, uniform confidence, zero expected return), never NaN. Everything is deterministic
(``seed``; no early stopping, no subsampling), so a value computed on ``bars[:t+1]`` equals the
one computed on all bars, bit for bit: the truncation test checks it.

:func:`forecast_diagnostics` gives the calibration of the out-of-sample predictions (reliability
curves, multi-class Brier score) as a JSON-ready dict.

scikit-learn is imported only when a forecast is computed (``pip install rltrade[rl]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rltrade.errors import ConfigError
from rltrade.features.base import (
    FEATURES,
    BarArrays,
    register_feature,
    require_int,
    require_number,
    rolling_mean,
    rolling_std,
)
from rltrade.features.strategies import kernels as K

OWNER = "feature 'forecast'"
COLUMNS = ("forecast_signal", "forecast_confidence", "forecast_target")
#: momentum horizons of the base inputs (bars)
MOMENTUM_HORIZONS = (1, 2, 4, 8, 16, 32)
#: the base inputs, in order (see :func:`forecast_inputs`)
BASE_INPUTS = (
    *(f"mom_{h}" for h in MOMENTUM_HORIZONS),
    "rvol",
    "vol_ratio",
    "rsi_14",
    "range_pos",
    "sma_dev_20",
    "volume_ratio_20",
)

DEFAULTS: dict[str, Any] = {
    "horizon": 4,
    "flat_threshold": 0.43,
    "threshold_mode": "vol",
    "vol_window": 50,
    "refit_every": 500,
    "min_train": 1000,
    "max_train": 10_000,
    "embargo": 0,
    "max_iter": 100,
    "learning_rate": 0.05,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 50,
    "l2_regularization": 1.0,
    "seed": 0,
    "extra_inputs": ["alpha_signal"],
}


def _check_params(p: dict[str, Any]) -> None:
    for key, minimum in (("horizon", 1), ("vol_window", 2), ("refit_every", 1), ("min_train", 10),
                         ("max_train", 0), ("embargo", 0), ("max_iter", 1),
                         ("max_leaf_nodes", 2), ("min_samples_leaf", 1), ("seed", 0)):
        require_int(OWNER, key, p[key], minimum)
    if p["max_train"] and p["max_train"] < p["min_train"]:
        raise ConfigError(f"{OWNER}: max_train ({p['max_train']}) must be 0 (all samples) or "
                          f">= min_train ({p['min_train']})")
    require_number(OWNER, "flat_threshold", p["flat_threshold"], 0.0, closed=True)
    require_number(OWNER, "learning_rate", p["learning_rate"], 0.0)
    require_number(OWNER, "l2_regularization", p["l2_regularization"], 0.0, closed=True)
    if p["threshold_mode"] not in ("vol", "abs"):
        raise ConfigError(f"{OWNER}: threshold_mode must be 'vol' or 'abs', "
                          f"got {p['threshold_mode']!r}")
    extra = p["extra_inputs"]
    if not isinstance(extra, list | tuple) or not all(isinstance(c, str) for c in extra):
        raise ConfigError(f"{OWNER}: extra_inputs must be a list of column names, got {extra!r}")


# ------------------------------------------------------------------------------------------
# Inputs and labels


def _log_returns(close: np.ndarray) -> np.ndarray:
    out = np.full(len(close), np.nan)
    out[1:] = np.diff(np.log(close))
    return out


def _ratio(num: np.ndarray, den: np.ndarray, where_zero: float) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den != 0, num / den, where_zero)
    out[np.isnan(den) | np.isnan(num)] = np.nan
    return out


def forecast_inputs(
    bars: BarArrays, vol_window: int = 50, extra_inputs: list[str] | tuple[str, ...] = ()
) -> tuple[np.ndarray, list[str]]:
    """The forecaster's inputs ``[T, d]`` (float64, NaN during warm-up) and their names.

    Base inputs (:data:`BASE_INPUTS`), each known at the close of its bar:

    * ``mom_h``: log return over ``h`` bars ÷ (``rvol × sqrt(h)``), ``h`` in
      :data:`MOMENTUM_HORIZONS` (volatility-scaled momentum);
    * ``rvol``: std of one-bar log returns over ``vol_window`` bars;
    * ``vol_ratio``: std over 10 bars ÷ ``rvol``;
    * ``rsi_14``: Wilder RSI(14) ÷ 100;
    * ``range_pos``: ``(close - low) / (high - low)`` (0.5 on a bar without range);
    * ``sma_dev_20``: ``(close / SMA20 - 1) / rvol``;
    * ``volume_ratio_20``: volume ÷ its mean over 20 bars (1 when that mean is 0);

    then the columns of ``extra_inputs`` the bars have, as they are.
    """
    close = bars.close
    logc = np.log(close)
    lr = _log_returns(close)
    rvol = rolling_std(lr, vol_window)
    cols: list[np.ndarray] = []
    for h in MOMENTUM_HORIZONS:
        mom = np.full(len(close), np.nan)
        mom[h:] = logc[h:] - logc[:-h]
        cols.append(_ratio(mom, rvol * math.sqrt(h), 0.0))
    cols.append(rvol)
    cols.append(_ratio(rolling_std(lr, 10), rvol, 1.0))
    cols.append(K.rsi(np.ascontiguousarray(close), 14) / 100.0)
    cols.append(_ratio(close - bars.low, bars.high - bars.low, 0.5))
    cols.append(_ratio(_ratio(close, rolling_mean(close, 20), 1.0) - 1.0, rvol, 0.0))
    cols.append(_ratio(bars.volume, rolling_mean(bars.volume, 20), 1.0))
    names = list(BASE_INPUTS)
    for col in extra_inputs:
        if bars.has(col):
            cols.append(np.asarray(bars.column(col), dtype=np.float64))
            names.append(col)
    x = np.column_stack(cols)
    x[~np.isfinite(x)] = np.nan
    return x, names


def forecast_labels(
    bars: BarArrays, horizon: int, flat_threshold: float, threshold_mode: str, vol_window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Forward returns ``close[i + k] / close[i] - 1`` and their classes (0 down, 1 flat, 2 up;
    -1 where unknown: the last ``k`` bars, or no threshold yet). The label of ``i`` is known at
    the close of bar ``i + k``."""
    close = bars.close
    n = len(close)
    fwd = np.full(n, np.nan)
    if n > horizon:
        fwd[:-horizon] = close[horizon:] / close[:-horizon] - 1.0
    if threshold_mode == "vol":
        thr = flat_threshold * rolling_std(_log_returns(close), vol_window) * math.sqrt(horizon)
    else:
        thr = np.full(n, float(flat_threshold))
    cls = np.where(fwd > thr, 2, np.where(fwd < -thr, 0, 1)).astype(np.int64)
    cls[~(np.isfinite(fwd) & np.isfinite(thr))] = -1
    return fwd, cls


# ------------------------------------------------------------------------------------------
# Walk-forward


@dataclass
class ForecastResult:
    """Everything a walk-forward run produced (see :func:`walk_forward_forecast`).

    ``proba`` ``[T, 3]`` (down, flat, up; uniform before the first refit), ``signal``,
    ``confidence``, ``target``, ``model_index`` (which refit produced bar ``t``'s forecast, -1
    before the first), ``labels`` / ``forward_returns`` (the realised classes, -1 where unknown),
    and one entry per refit in ``refits``: ``{"bar", "first_sample", "last_sample", "n_samples",
    "class_counts", "class_means"}``; ``models`` holds the fitted estimators when asked for.
    """

    proba: np.ndarray
    signal: np.ndarray
    confidence: np.ndarray
    target: np.ndarray
    model_index: np.ndarray
    labels: np.ndarray
    forward_returns: np.ndarray
    input_names: list[str]
    params: dict[str, Any]
    refits: list[dict[str, Any]] = field(default_factory=list)
    models: list[Any] = field(default_factory=list)


class _Constant:
    """Stands in for a classifier when the training set has a single class."""

    def __init__(self, cls: int) -> None:
        self.classes_ = np.array([cls])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.ones((len(x), 1))


def _estimator_class() -> Any:
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
    except ImportError as exc:  # pragma: no cover - sklearn is in the rl extra
        raise ConfigError(
            f"{OWNER} needs scikit-learn: pip install 'rltrade[rl]' (or scikit-learn>=1.4)"
        ) from exc
    return HistGradientBoostingClassifier


def _model(p: dict[str, Any]) -> Any:
    return _estimator_class()(
        max_iter=int(p["max_iter"]),
        learning_rate=float(p["learning_rate"]),
        max_leaf_nodes=int(p["max_leaf_nodes"]),
        min_samples_leaf=int(p["min_samples_leaf"]),
        l2_regularization=float(p["l2_regularization"]),
        early_stopping=False,
        random_state=int(p["seed"]),
    )


def walk_forward_forecast(
    bars: Any, params: dict[str, Any] | None = None, *, keep_models: bool = False
) -> ForecastResult:
    """Fit and apply the forecaster walk-forward over ``bars`` (see the module docstring).

    :param bars: :class:`BarArrays`, bars as a DataFrame, or a Dataset (its bars).
    :param params: the group's parameters (defaults filled in from :data:`DEFAULTS`).
    :param keep_models: also return the fitted estimators (for inspection and tests).
    """
    bars = _as_bars(bars)
    p = FEATURES["forecast"].resolve(params)
    _check_params(p)
    k, embargo, every = int(p["horizon"]), int(p["embargo"]), int(p["refit_every"])
    x, names = forecast_inputs(bars, int(p["vol_window"]), list(p["extra_inputs"]))
    fwd, labels = forecast_labels(
        bars, k, float(p["flat_threshold"]), p["threshold_mode"], int(p["vol_window"])
    )
    n = len(bars)
    usable = (labels >= 0) & np.isfinite(x).all(axis=1)
    proba = np.full((n, 3), 1.0 / 3.0)
    model_index = np.full(n, -1, dtype=np.int64)
    result = ForecastResult(
        proba, np.zeros(n), np.full(n, 1.0 / 3.0), np.zeros(n), model_index, labels, fwd,
        names, p,
    )
    # Samples usable at refit r: usable i with i <= r - 1 - embargo - k.
    count = np.cumsum(usable)  # count[j] = usable samples among 0..j
    lag = 1 + embargo + k
    ready = np.flatnonzero(count >= p["min_train"])
    if not len(ready) or ready[0] + lag >= n:
        return result
    r0 = int(ready[0]) + lag  # the first bar whose model sees min_train samples
    with _one_thread():
        for r in range(r0, n, every):
            _refit(result, r, x, usable, lag, every, p, keep_models)
    fitted = model_index >= 0
    best = np.argmax(proba[fitted], axis=1)
    result.signal[fitted] = best - 1.0
    result.confidence[fitted] = proba[fitted][np.arange(len(best)), best]
    return result


def _one_thread() -> Any:
    """One OpenMP thread for scikit-learn: on fits this small its threads cost more than they
    save, and they collapse when the cores are shared (spinning workers); results are the same.
    scikit-learn is imported first: threadpoolctl only limits runtimes already loaded."""
    _estimator_class()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="openmp")


def _refit(result: ForecastResult, r: int, x: np.ndarray, usable: np.ndarray, lag: int,
           every: int, p: dict[str, Any], keep_models: bool) -> None:
    """Fit the model of refit bar ``r`` and write the forecasts of bars ``r .. r + every - 1``."""
    n = len(usable)
    fwd, labels = result.forward_returns, result.labels
    last = r - lag
    idx = np.flatnonzero(usable[: last + 1])
    if p["max_train"]:
        idx = idx[-int(p["max_train"]) :]
    y = labels[idx]
    present = np.unique(y)
    if len(present) < 2:
        model: Any = _Constant(int(present[0]))
    else:
        model = _model(p).fit(x[idx], y)
    means = np.zeros(3)
    counts = np.zeros(3, dtype=np.int64)
    for c in range(3):
        sel = y == c
        counts[c] = int(sel.sum())
        if counts[c]:
            means[c] = float(fwd[idx][sel].mean())
    stop = min(r + every, n)
    block = np.zeros((stop - r, 3))
    block[:, model.classes_] = model.predict_proba(x[r:stop])
    result.proba[r:stop] = block
    result.model_index[r:stop] = len(result.refits)
    # elementwise (not a BLAS product): the same bits whatever the block's length
    result.target[r:stop] = (
        block[:, 0] * means[0] + block[:, 1] * means[1] + block[:, 2] * means[2]
    )
    result.refits.append({
        "bar": r,
        "first_sample": int(idx[0]),
        "last_sample": int(idx[-1]),
        "n_samples": len(idx),
        "class_counts": counts.tolist(),
        "class_means": means.tolist(),
    })
    if keep_models:
        result.models.append(model)


@register_feature(
    "forecast",
    description="Walk-forward gradient-boosted forecast of the next `horizon` bars' direction "
    "(down/flat/up): signal, confidence of the predicted class, expected return",
    defaults=DEFAULTS,
    norms=lambda p: {c: "none" for c in COLUMNS},
)
def forecast(bars: BarArrays, **params: Any) -> dict[str, np.ndarray]:
    res = walk_forward_forecast(bars, params)
    return {
        "forecast_signal": res.signal,
        "forecast_confidence": res.confidence,
        "forecast_target": res.target,
    }


# ------------------------------------------------------------------------------------------
# Calibration diagnostics


def _reliability(conf: np.ndarray, hit: np.ndarray, bins: int) -> list[dict[str, Any]]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        out.append({
            "lo": float(edges[b]),
            "hi": float(edges[b + 1]),
            "count": n,
            "mean_predicted": float(conf[sel].mean()) if n else None,
            "observed": float(hit[sel].mean()) if n else None,
        })
    return out


def forecast_diagnostics(
    source: Any, params: dict[str, Any] | None = None, *, bins: int = 10
) -> dict[str, Any]:
    """Calibration of the forecaster's out-of-sample predictions, as a JSON-ready dict.

    :param source: bars (a DataFrame in rltrade's layout or :class:`BarArrays`) or a
        :class:`~rltrade.features.Dataset`. A Dataset's own bars are used (its warm-up rows are
        already dropped, so the refit schedule starts later than in the Dataset's
        ``forecast_*`` columns); its spec's ``forecast`` parameters are used when ``params`` is
        ``None``.
    :param params: the group's parameters (defaults filled in).
    :param bins: number of equal-width probability bins of the reliability curves.
    :returns: ``{"params", "inputs", "n_refits", "n_predictions", "class_frequencies",
        "accuracy", "brier", "brier_uniform", "brier_climatology", "reliability":
        {"top_label": [...], "down": [...], "flat": [...], "up": [...]}}``. Only bars with a
        fitted model and a realised label count. ``brier`` is the multi-class Brier score
        (mean over bars of the sum over classes of (p - y)²); ``brier_uniform`` that of always
        predicting 1/3 (2/3); ``brier_climatology`` that of predicting the realised class
        frequencies. ``top_label``: confidence of the predicted class vs its hit rate; per class:
        predicted probability vs the frequency of that class. Empty bins have ``null`` means.
    """
    require_int("forecast_diagnostics", "bins", bins, 1)
    bars = _as_bars(source)
    if params is None and hasattr(source, "spec"):
        for item in source.spec.features:
            if item.name == "forecast":
                params = item.params
                break
    res = walk_forward_forecast(bars, params)
    sel = (res.model_index >= 0) & (res.labels >= 0)
    proba = res.proba[sel]
    y = res.labels[sel]
    onehot = np.zeros_like(proba)
    onehot[np.arange(len(y)), y] = 1.0
    n = len(y)
    freq = onehot.mean(axis=0) if n else np.zeros(3)
    pred = np.argmax(proba, axis=1)
    out: dict[str, Any] = {
        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in res.params.items()},
        "inputs": res.input_names,
        "n_refits": len(res.refits),
        "n_predictions": n,
        "class_frequencies": {"down": float(freq[0]), "flat": float(freq[1]),
                              "up": float(freq[2])},
        "accuracy": float((pred == y).mean()) if n else None,
        "brier": float(((proba - onehot) ** 2).sum(axis=1).mean()) if n else None,
        "brier_uniform": 2.0 / 3.0,
        "brier_climatology": float(((freq - onehot) ** 2).sum(axis=1).mean()) if n else None,
        "reliability": {
            "top_label": _reliability(proba[np.arange(n), pred], (pred == y).astype(float), bins),
        },
    }
    for c, name in enumerate(("down", "flat", "up")):
        out["reliability"][name] = _reliability(proba[:, c], onehot[:, c], bins)
    return out


def _as_bars(source: Any) -> BarArrays:
    if isinstance(source, BarArrays):
        return source
    if isinstance(source, pd.DataFrame):
        return BarArrays.from_frame(source)
    if hasattr(source, "ohlcv") and hasattr(source, "timestamps"):
        from rltrade.data.timeframes import parse_timeframe

        o = source.ohlcv
        return BarArrays(
            np.asarray(source.timestamps), o[:, 0], o[:, 1], o[:, 2], o[:, 3], o[:, 4],
            parse_timeframe(source.timeframe), dict(source.extras),
        )
    raise ConfigError(
        f"forecast_diagnostics: expected bars (DataFrame or BarArrays) or a Dataset, "
        f"got {type(source).__name__}"
    )
