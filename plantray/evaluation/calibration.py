"""Calibration: its metrics (NLL, ECE, Brier, reliability bins) and the temperature fit, in numpy.

Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks", ICML) divides the
logits by one scalar T > 0 before the softmax, fitted by minimising the negative log-likelihood on a
validation set. The argmax never changes, so accuracy stays; only the confidences do. ECE follows the
same paper: the top-1 confidence in M equal-width bins ``((m-1)/M, m/M]``, and the image-weighted mean
of |accuracy - mean confidence| over the bins.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from plantray import columns as col

BINS = 15  # Guo et al.'s M
EPS = 1e-12  # log(0) guard: a probability of exactly 0 for the true class
T_RANGE = (0.05, 20.0)  # the fit's search interval; a fit at an end says the data could not place T
CHUNK_VALUES = 1 << 22  # logits per chunk of the fit (32 MiB of float64 temporaries)


def nll(true_probability: np.ndarray) -> float | None:
    """Mean negative log-likelihood from each image's probability of its true class (None for no images)."""
    p = np.asarray(true_probability, np.float64)
    return float(-np.log(np.clip(p, EPS, None)).mean()) if len(p) else None


def brier_rows(probs: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Multi-class Brier contribution of each image: ``sum_c (p_c - 1[c = true])^2``.

    Args:
        probs: ``[N, C]`` probabilities.
        true: ``[N]`` true class indices.
    Returns:
        float64 ``[N]``, each in [0, 2].
    """
    probs = np.asarray(probs, np.float64)
    p_true = probs[np.arange(len(probs)), true]
    return (probs**2).sum(axis=1) - 2 * p_true + 1


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> list[dict]:
    """The reliability diagram's bins: equal-width on the top-1 confidence, ``((m-1)/M, m/M]``.

    Returns:
        One dict per bin: ``low``, ``high``, ``images``, ``confidence`` and ``accuracy`` (means; None
        for an empty bin).
    """
    conf = np.asarray(confidence, np.float64)
    ok = np.asarray(correct, np.float64)
    # Right-closed bins on linspace edges, as Guo et al.'s code (lower < conf <= upper); 0 joins the first.
    index = np.digitize(conf, np.linspace(0.0, 1.0, bins + 1)[1:-1], right=True)
    count = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=conf, minlength=bins)
    ok_sum = np.bincount(index, weights=ok, minlength=bins)
    return [{"low": m / bins, "high": (m + 1) / bins, "images": int(count[m]),
             "confidence": float(conf_sum[m] / count[m]) if count[m] else None,
             "accuracy": float(ok_sum[m] / count[m]) if count[m] else None} for m in range(bins)]


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float | None:
    """Expected calibration error: ``sum_m |B_m|/N * |acc(B_m) - conf(B_m)|`` (None for no images)."""
    n = len(confidence)
    if n == 0:
        return None
    return float(sum(b["images"] / n * abs(b["accuracy"] - b["confidence"])
                     for b in reliability_bins(confidence, correct, bins) if b["images"]))


def summary(confidence: np.ndarray, correct: np.ndarray, true_probability: np.ndarray, brier: np.ndarray,
            bins: int = BINS) -> dict:
    """Every calibration figure of one set of probabilities, from per-image values.

    Args:
        confidence: top-1 probability per image.
        correct: whether the top-1 is the true class.
        true_probability: the probability of the true class.
        brier: per-image Brier contributions (:func:`brier_rows`).
    Returns:
        ``{"images", "nll", "ece", "brier", "mean_confidence", "accuracy", "bins"}``.
    """
    n = len(confidence)
    return {"images": n, "nll": nll(true_probability), "ece": ece(confidence, correct, bins),
            "brier": float(np.mean(brier)) if n else None,
            "mean_confidence": float(np.mean(confidence)) if n else None,
            "accuracy": float(np.mean(correct)) if n else None, "bins": reliability_bins(confidence, correct, bins)}


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _chunks(logits: np.ndarray):
    rows = max(1, CHUNK_VALUES // max(1, logits[0].size if len(logits) else 1))
    for start in range(0, len(logits), rows):
        yield start, logits[start:start + rows].astype(np.float64)


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """float64 ``[N, C]``: softmax of ``logits / T`` averaged over each image's crops.

    Args:
        logits: ``[N, V, C]`` (V crops per image, as the predictors average them) or ``[N, C]``.
        temperature: T.
    """
    logits = logits[:, None] if logits.ndim == 2 else logits
    out = np.empty((len(logits), logits.shape[-1]), np.float64)
    for start, z in _chunks(logits):
        out[start:start + len(z)] = np.exp(_log_softmax(z / temperature)).mean(axis=1)
    return out


def nll_at(logits: np.ndarray, true: np.ndarray, temperature: float) -> float:
    """Mean NLL of the true classes under :func:`probabilities` at ``temperature``, chunk by chunk.

    Args:
        logits: ``[N, V, C]`` or ``[N, C]``.
        true: ``[N]`` class indices.
        temperature: T.
    """
    logits = logits[:, None] if logits.ndim == 2 else logits
    total = 0.0
    for start, z in _chunks(logits):
        logp = _log_softmax(z / temperature)[np.arange(len(z)), :, true[start:start + len(z)]]  # [n, V]
        # log of the mean over crops of p(true), stably: logsumexp(log p) - log V
        peak = logp.max(axis=1, keepdims=True)
        total -= float((np.log(np.exp(logp - peak).mean(axis=1)) + peak[:, 0]).sum())
    return total / len(logits)


def golden_section(f: Callable[[float], float], low: float, high: float, tol: float = 1e-5) -> float:
    """The minimiser of a unimodal ``f`` on [low, high], to within ``tol`` (golden-section search)."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:  # the minimum lies in [a, d]
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return (a + b) / 2


def fit_temperature(logits: np.ndarray, true: np.ndarray, bounds: tuple[float, float] = T_RANGE) -> float:
    """The temperature that minimises the validation NLL (Guo et al. 2017).

    With one crop per image, NLL is convex in 1/T (a log-sum-exp of terms linear in 1/T minus a linear
    term), hence unimodal in log T, so a golden-section search on log T finds the global minimum.

    Args:
        logits: ``[N, V, C]`` or ``[N, C]`` validation logits.
        true: ``[N]`` true class indices.
        bounds: the search interval of T.
    Returns:
        T, rounded to 4 significant digits.
    Raises:
        ValueError: no images.
    """
    if len(logits) == 0:
        raise ValueError("no validation images to fit a temperature on")
    log_t = golden_section(lambda u: nll_at(logits, true, math.exp(u)), math.log(bounds[0]), math.log(bounds[1]))
    return float(f"{math.exp(log_t):.4g}")


def figures(logits: np.ndarray, true: np.ndarray, temperature: float) -> dict:
    """NLL and ECE of ``logits`` at ``temperature`` (what the model card records before and after)."""
    probs = probabilities(logits, temperature)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == true
    return {"nll": nll(probs[np.arange(len(probs)), true]), "ece": ece(confidence, correct)}


def score_rows(table, bins: int = BINS) -> dict:
    """Calibration of one model on one test set from evaluate's per-image rows, with and without T.

    Args:
        table: pyarrow rows of one test set that were classified (no ``error``), with ``topk_confidence``,
            ``correct@1``, ``true_probability``, ``brier`` and their ``uncalibrated_`` twins.
    Returns:
        ``{"calibrated": summary, "uncalibrated": summary}`` (:func:`summary`); the argmax does not depend
        on T, so ``correct@1`` serves both.
    """
    def values(name: str) -> np.ndarray:
        return np.asarray(table.column(name).to_numpy(zero_copy_only=False), np.float64)

    top = table.column(col.TOPK_CONFIDENCE).to_pylist()
    confidence = np.array([c[0] if c else np.nan for c in top], np.float64)
    correct = np.asarray(table.column("correct@1").to_pylist(), bool)
    return {"calibrated": summary(confidence, correct, values(col.TRUE_PROBABILITY), values(col.BRIER), bins),
            "uncalibrated": summary(values(col.UNCALIBRATED_CONFIDENCE), correct,
                                    values(col.UNCALIBRATED_TRUE_PROBABILITY), values(col.UNCALIBRATED_BRIER), bins)}
