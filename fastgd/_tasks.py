"""Datasets, models and optimizers by name, for ``fastgd train`` and ``fastgd compare``."""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

import fastgd
from fastgd import schedules as S
from fastgd.models import MLP, LinearRegression, LogisticRegression
from fastgd.optim.registry import by_name, command_names

#: ``fastgd train`` / ``compare`` names -> (rule, keyword arguments, mini-batches?), from the
#: registry; "gd" is plain batch gradient descent. The learning rates suit standardized
#: inputs.
OPTIMIZERS: dict[str, tuple[Any, dict[str, Any], bool]] = {
    name: (rule, dict(kw), minibatch) for name, (rule, kw, minibatch) in command_names().items()
}


@dataclass
class Dataset:
    """A train / validation split, standardized with the training statistics."""

    X: np.ndarray
    y: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    task: str  # "classification" | "regression"
    n_classes: int
    name: str


def load_data(source: str, task: str = "auto", val_split: float = 0.2, seed: int = 0,
              dtype: Any = np.float32) -> Dataset:
    """Load a data set, split it and standardize it.

    ``source`` is ``"digits"`` (scikit-learn's bundled 8x8 digits, no network), an ``.npz``
    file with arrays ``X`` and ``y``, or a ``.csv`` whose last column is the target (a header
    row is skipped when it is not numeric).

    Args:
        source: as above.
        task: ``"classification"``, ``"regression"`` or ``"auto"`` (integer targets with at
            most 100 distinct values are classes).
        val_split: the share held out for validation.
        seed: seed of the split.
        dtype: dtype of the inputs.

    Raises:
        ValueError: unreadable or inconsistent data.
    """
    if not 0.0 <= val_split < 1.0:
        raise ValueError(f"val_split must be in [0, 1), got {val_split}")
    if source == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise ValueError("the built-in digits data set comes with scikit-learn: "
                             "pip install scikit-learn (or pass --data FILE.npz/.csv)") from None
        X, y = load_digits(return_X_y=True)
    elif source.endswith(".npz"):
        with np.load(source, allow_pickle=False) as z:
            if "X" not in z.files or "y" not in z.files:
                raise ValueError(f"{source} must hold arrays 'X' and 'y', has {z.files}")
            X, y = z["X"], z["y"]
    elif source.endswith(".csv"):
        with open(source, newline="") as f:
            rows = [r for r in csv.reader(f) if r]
        try:
            [float(v) for v in rows[0]]
        except (ValueError, IndexError):
            rows = rows[1:]
        try:
            data = np.array([[float(v) for v in r] for r in rows])
        except ValueError as e:
            raise ValueError(f"{source}: not numeric CSV ({e})") from None
        if data.ndim != 2 or data.shape[1] < 2:
            raise ValueError(f"{source}: need at least one feature column and a target")
        X, y = data[:, :-1], data[:, -1]
    else:
        raise ValueError(f"unknown data {source!r}: use 'digits', FILE.npz or FILE.csv")
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{source}: y must be 1-D, one target per row, got shape {y.shape}")
    if y.dtype.kind not in "biufUS":
        raise ValueError(f"{source}: y has dtype {y.dtype}; targets are numbers or labels")
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: X must be numeric, got dtype {np.asarray(X).dtype}"
                         ) from None
    if X.ndim != 2 or len(X) != len(y) or len(X) < 2:
        raise ValueError(f"{source}: X must be 2-D with one row per target (at least 2 "
                         f"rows), got {X.shape} and {y.shape}")
    labels = y.dtype.kind in "US"
    bad = ~np.isfinite(X)
    if not labels:
        bad |= ~np.isfinite(y.astype(np.float64))[:, None]
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise ValueError(f"{source}: {int(bad.sum())} cells are NaN or infinite (rows "
                         f"{', '.join(map(str, rows[:5]))}{' ...' if len(rows) > 5 else ''});"
                         " fill or drop them first")
    if labels and task == "regression":
        raise ValueError(f"{source}: regression needs numeric targets, y holds labels")
    if task == "auto":
        integral = labels or y.dtype.kind in "iub" or bool(np.all(np.mod(y, 1) == 0))
        task = ("classification" if integral and (labels or len(np.unique(y)) <= 100)
                else "regression")
    n_classes = 0
    if task == "classification":
        classes, y = np.unique(y, return_inverse=True)
        n_classes = len(classes)
        if n_classes < 2:
            raise ValueError("classification needs at least 2 classes")
        y = y.astype(np.int64)
    else:
        y = y.astype(dtype)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(X))
    n_val = round(val_split * len(X))
    val, tr = idx[:n_val], idx[n_val:]
    mean, std = X[tr].mean(axis=0), X[tr].std(axis=0)
    std[std == 0] = 1.0
    X = ((X - mean) / std).astype(dtype)
    return Dataset(X[tr], y[tr], X[val], y[val], task, n_classes,
                   os.path.basename(source))


def make_model(data: Dataset, kind: str = "mlp", layers: tuple[int, ...] = (64,),
               activation: str = "relu", seed: int = 0, l2: float = 0.0,
               dtype: Any = np.float32) -> Any:
    """The model ``kind`` (``mlp``, ``logistic``, ``linear``) for ``data``."""
    d = data.X.shape[1]
    if kind == "mlp":
        if data.task == "classification":
            k = 1 if data.n_classes == 2 else data.n_classes
            out = "binary" if k == 1 else "multiclass"
        else:
            k, out = 1, "regression"
        return MLP([d, *layers, k], activation=activation, output=out, l2=l2, dtype=dtype,
                   seed=seed)
    if kind == "logistic":
        if data.task != "classification":
            raise ValueError("logistic regression needs a classification data set")
        return LogisticRegression(d, data.n_classes, l2=l2, dtype=dtype, seed=seed)
    if kind == "linear":
        if data.task != "regression":
            raise ValueError("linear regression needs a regression data set")
        return LinearRegression(d, l2=l2, dtype=dtype, seed=seed)
    raise ValueError(f"unknown model {kind!r}: use mlp, logistic or linear")


def targets(model: Any, y: np.ndarray) -> np.ndarray:
    """``y`` in the form the model's loss takes (binary classes as floats)."""
    return y.astype(model.dtype) if model.output == "binary" else y


def make_schedule(name: str, lr: float, epochs: int, steps_per_epoch: int) -> Any:
    """``none``, ``cosine``, ``step`` (x0.1 at 50 % and 75 %), ``onecycle``, ``warmup``."""
    total = max(1, epochs * steps_per_epoch)
    if name == "none":
        return lr
    if name == "cosine":
        return S.cosine(lr, total)
    if name == "step":
        return S.multi_step(lr, [total // 2, (3 * total) // 4], 0.1)
    if name == "onecycle":
        return S.one_cycle(lr, total)
    if name == "warmup":
        warm = max(1, total // 20)
        return S.join([S.linear(0.0, lr, warm), S.cosine(lr, max(1, total - warm))], [warm])
    raise ValueError(f"unknown schedule {name!r}: none, cosine, step, onecycle, warmup")


def optimizer_class(name: str) -> type:
    """The optimizer class of a :data:`OPTIMIZERS` name or a fastgd class name.

    Raises:
        ValueError: no such optimizer; the message lists the names.
    """
    key = name.lower()
    if key in OPTIMIZERS:
        return OPTIMIZERS[key][0].cls
    try:
        return by_name(key)
    except ValueError:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)} "
                         "or a fastgd optimizer class") from None


def run(data: Dataset, model: Any, optimizer_name: str, *, lr: float | None, epochs: int,
        batch_size: int | None, schedule: str = "none", clip_norm: float | None = None,
        seed: int = 0, progress: bool | None = None, verbose: bool = False,
        extra_opt: dict[str, Any] | None = None) -> tuple[fastgd.History, float, Any]:
    """Train ``model`` on ``data`` with a named optimizer.

    The name is a key of :data:`OPTIMIZERS` or a fastgd class name; returns
    ``(history, seconds, optimizer)``.
    """
    key = optimizer_name.lower()
    cls = optimizer_class(optimizer_name)
    _, kw, minibatch = OPTIMIZERS.get(key, (None, {}, True))
    kw = {**kw, **(extra_opt or {})}
    if lr is not None:
        kw["lr"] = lr
    bs = batch_size if minibatch else None
    steps = 1 if bs is None else -(-len(data.X) // bs)
    kw["lr"] = make_schedule(schedule, kw.get("lr", 1e-3), epochs, steps)
    opt = cls(model.flat, **kw)
    t0 = time.perf_counter()
    hist = fastgd.fit(model, opt, data.X, targets(model, data.y), epochs=epochs,
                      batch_size=bs, seed=seed, progress=progress, verbose=verbose,
                      clip_norm=clip_norm,
                      validation_data=(data.X_val, targets(model, data.y_val))
                      if len(data.X_val) else None)
    return hist, time.perf_counter() - t0, opt


def matplotlib_pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or a clear error naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install matplotlib (or fastgd[plot])"
                         ) from None
    return plt


def plot_curves(curves: dict[str, list[float]], path: str, title: str) -> None:
    """One PNG with a loss curve per entry (needs matplotlib)."""
    plt = matplotlib_pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, ys in curves.items():
        ax.plot(range(1, len(ys) + 1), ys, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
