"""The training loop: batch, stochastic and mini-batch gradient descent for fastgd models.

``fit(model, optimizer, X, y, ...)`` runs epochs of ``model.loss_and_grad`` (gradients into
the model's flat buffer) and ``optimizer.step()``. Each epoch shuffles once, with a seed,
into preallocated buffers and takes contiguous slices as batches (no fancy-indexed copy per
batch). It tracks the training loss (the mean over the epoch's batches), validation loss
and accuracy, wall time, and stops early on patience, a loss tolerance, a step budget or a
callback.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastgd import _backend

__all__ = ["EarlyStopping", "History", "fit"]


@dataclass
class History:
    """What :func:`fit` recorded: one entry per epoch in each list of :attr:`history`.

    Attributes:
        history: ``{"loss": [...], "time": [...], "val_loss": [...], "accuracy": [...],
            "val_accuracy": [...], "lr": [...]}`` (the keys that apply).
        epochs: epochs run.
        steps: optimizer steps applied.
        stopped_early: why training ended before ``epochs``, or None.
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    epochs: int = 0
    steps: int = 0
    stopped_early: str | None = None

    def log(self, key: str, value: float) -> None:
        """Append one epoch's value."""
        self.history.setdefault(key, []).append(float(value))

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]


@dataclass
class EarlyStopping:
    """Stop when the monitored value has not improved for ``patience`` epochs.

    Args:
        monitor: ``"val_loss"`` (default when validation data is given), ``"loss"``, or
            any logged key (``"val_accuracy"``: higher is better).
        patience: epochs without improvement to tolerate.
        min_delta: the smallest change that counts as an improvement.
        restore_best: put back the parameters of the best epoch at the end.
    """

    monitor: str | None = None
    patience: int = 5
    min_delta: float = 0.0
    restore_best: bool = True


def _progress(total: int, enabled: bool | None, desc: str) -> Any:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _PlainProgress(total, desc)
    return tqdm(total=total, desc=desc, leave=False, unit="batch")


class _PlainProgress:
    """A one-line progress report on stderr when tqdm is not installed."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.n = total, desc, 0

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.n == self.total or self.n % max(1, self.total // 20) == 0:
            sys.stderr.write(f"\r{self.desc}: {self.n}/{self.total}")
            sys.stderr.flush()

    def set_postfix_str(self, s: str) -> None:
        sys.stderr.write(f"\r{self.desc}: {self.n}/{self.total} {s}")

    def close(self) -> None:
        sys.stderr.write("\n")


def _accuracy(model: Any, X: Any, y: Any) -> float | None:
    if getattr(model, "output", "regression") == "regression":
        return None
    pred = model.predict(X)
    y = _backend.xp_of(pred).asarray(y).reshape(-1)
    return float((pred == y).mean())


def _shuffled_batches(X: Any, y: Any, perm: Any, Xb: Any, yb: Any
                      ) -> Iterator[tuple[Any, Any]]:
    """Batches of rows ``perm[i : i + len(Xb)]`` of ``X`` and ``y``, gathered into ``Xb``, ``yb``.

    Each batch overwrites the previous one: consume it before asking for the next.
    """
    n, size = X.shape[0], Xb.shape[0]
    for i in range(0, n, size):
        rows = perm[i : i + size]
        m = rows.shape[0]
        for src, dst in ((X, Xb), (y, yb)):
            _backend.launch("gather", "gather_rows", (), src.reshape(n, -1), rows,
                            dst[:m].reshape(m, -1))
        yield Xb[:m], yb[:m]


def fit(model: Any, optimizer: Any, X: Any = None, y: Any = None, *, epochs: int = 10,
        batch_size: int | None = 32, shuffle: bool = True,
        seed: int | np.random.Generator | None = None,
        batches: Callable[[int], Iterable[tuple[Any, Any]]] | None = None,
        validation_data: tuple[Any, Any] | None = None,
        early_stopping: EarlyStopping | None = None, loss_tol: float | None = None,
        max_steps: int | None = None, clip_norm: float | None = None,
        plateau: Any = None,
        callbacks: Sequence[Callable[[int, dict[str, float]], bool | None]] = (),
        progress: bool | None = None, verbose: bool = False,
        distributed: Any = "auto") -> History:
    """Train ``model`` with ``optimizer`` (built on ``model.flat``).

    Args:
        model: a :mod:`fastgd.models` model (anything with ``loss_and_grad(X, y)``,
            ``loss(X, y)``, ``predict`` and a ``flat`` FlatParams).
        optimizer: a fastgd optimizer over ``model.flat``.
        X: training inputs ``(n, features)`` (NumPy or CuPy), or None with ``batches``.
        y: training targets.
        epochs: passes over the data.
        batch_size: ``None`` (or ``>= n``) for batch gradient descent, 1 for stochastic,
            else mini-batches; the last batch of an epoch may be smaller.
        shuffle: reshuffle once per epoch (seeded); a full batch is not shuffled.
        seed: seed or Generator of the shuffling.
        batches: for data that does not fit in memory: ``batches(epoch)`` returns an
            iterable of ``(X_batch, y_batch)``; then ``X``/``y`` are not used.
        validation_data: ``(X_val, y_val)``, evaluated after every epoch.
        early_stopping: an :class:`EarlyStopping`.
        loss_tol: stop once the epoch's training loss is at most this.
        max_steps: stop after this many optimizer steps.
        clip_norm: passed to every ``optimizer.step`` (fused global-norm clipping).
        plateau: a ``ReduceLROnPlateau`` or ``BoldDriver``, stepped once per epoch with
            the validation loss (else the training loss).
        callbacks: ``cb(epoch, logs)`` after each epoch; returning True stops training.
        progress: a progress bar (tqdm when installed); default: on when stderr is a
            terminal.
        verbose: print one line per epoch.
        distributed: a :class:`fastgd.distributed.DataParallel`; ``"auto"`` (default)
            makes one when the process runs under ``mpiexec`` with more than one rank;
            ``None`` trains alone. Then every rank must call ``fit`` with the same data,
            seed and arguments: each takes its shard of every batch (with ``batches``, the
            function yields this rank's shards), gradients are averaged over the whole
            batch, parameters start from rank 0's and end verified identical, and only rank
            0 prints.

    Returns:
        The :class:`History`.

    Raises:
        ValueError: inconsistent data or arguments (before any step).

    Example:
        >>> import numpy as np, fastgd
        >>> from fastgd.models import LogisticRegression
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(256, 2)).astype(np.float32)
        >>> y = (X[:, 0] - X[:, 1] > 0).astype(np.int64)
        >>> model = LogisticRegression(2, seed=0)
        >>> hist = fit(model, fastgd.Adam(model.flat, lr=0.1), X, y, epochs=20,
        ...            batch_size=32, seed=0, progress=False)
        >>> hist["accuracy"][-1] > 0.95
        True
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    step_loss = model.loss_and_grad
    if batches is None:
        if X is None or y is None:
            raise ValueError("fit needs X and y, or a batches function")
        xp = _backend.xp_of(X)
        X, y = xp.asarray(X), xp.asarray(y)
        n = X.shape[0]
        if y.shape[0] != n:
            raise ValueError(f"X has {n} rows, y has {y.shape[0]}")
        if n == 0:
            raise ValueError("fit got no training data")
        if batch_size is None or batch_size >= n:
            batch_size = n
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer or None, got "
                             f"{batch_size!r}")
        if callable(getattr(model, "_prepare", None)):
            # fastgd's models: check and convert X and y once; the batches, row slices of
            # them, then skip the checks, and the loss stays on the GPU until the epoch ends
            X, y = model._prepare(X, y)
            step_loss = model._loss_and_grad
        else:
            model.loss(X[:1], y[:1])  # checks X and y once, before any step
    if distributed == "auto":
        from fastgd.distributed import DataParallel, world_size

        distributed = DataParallel(model.flat) if world_size() > 1 else None
    dist = distributed
    if dist is not None:
        # every rank shuffles with rank 0's seed and starts from rank 0's parameters
        if not isinstance(seed, (int, np.integer)):
            src = seed if isinstance(seed, np.random.Generator) else np.random.default_rng()
            seed = int(src.integers(2**63))
        seed = dist.comm.bcast(int(seed), root=0)
        dist.broadcast_parameters()
        if dist.rank != 0:
            progress, verbose = False, False
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    history = History()
    best, best_epoch, wait, best_params = None, -1, 0, None
    monitor = None
    if early_stopping is not None:
        monitor = early_stopping.monitor or ("val_loss" if validation_data else "loss")
    shuffle = shuffle and batches is None and batch_size < n  # a full batch has no order
    if shuffle:
        X, y = xp.ascontiguousarray(X), xp.ascontiguousarray(y)
        # one batch of rows at a time is gathered (in the serial loop below) into these:
        # the data is never copied whole, and each gathered batch is still in cache
        X_buf = xp.empty((batch_size, *X.shape[1:]), X.dtype)
        y_buf = xp.empty((batch_size, *y.shape[1:]), y.dtype)
    for epoch in range(epochs):
        t0 = time.perf_counter()
        if batches is None:
            if shuffle:
                it: Iterable[tuple[Any, Any]] = _shuffled_batches(
                    X, y, xp.asarray(rng.permutation(n)), X_buf, y_buf)
            else:
                it = ((X[i : i + batch_size], y[i : i + batch_size])
                      for i in range(0, n, batch_size))
            total = math.ceil(n / batch_size)
        else:
            it = batches(epoch)
            total = 0
        bar = _progress(total, progress, f"epoch {epoch + 1}/{epochs}") if total else None
        loss_sum, count = 0.0, 0
        with _backend.serial_kernels():  # BLAS threads and Numba threads would contend
            for xb, yb in it:
                if dist is None:
                    loss_sum += step_loss(xb, yb)
                else:
                    if batches is None:  # this rank's shard of the global batch
                        part = dist.shard(len(xb))
                        xb, yb = xb[part], yb[part]
                    n_local = len(xb)
                    n_total = int(dist.allreduce_scalar(n_local))
                    local = model.loss_and_grad(xb, yb) if n_local else 0.0
                    if not n_local:
                        model.flat.zero_grad()
                    dist.allreduce_gradients(n_local, n_total)
                    loss_sum += dist.allreduce_scalar(local * n_local) / max(n_total, 1)
                count += 1
                if optimizer.step(clip_norm=clip_norm):
                    history.steps += 1
                if bar is not None:
                    bar.update(1)
                if max_steps is not None and history.steps >= max_steps:
                    break
        if bar is not None:
            bar.close()
        logs: dict[str, float] = {"loss": float(loss_sum) / max(count, 1)}
        if batches is None:
            acc = _accuracy(model, X, y)
            if acc is not None:
                logs["accuracy"] = acc
        if validation_data is not None:
            xv, yv = validation_data
            logs["val_loss"] = model.loss(xv, yv)
            acc = _accuracy(model, xv, yv)
            if acc is not None:
                logs["val_accuracy"] = acc
        lr = optimizer.param_groups[0]["lr"]
        if isinstance(lr, (int, float)):
            logs["lr"] = float(lr)
        logs["time"] = time.perf_counter() - t0
        for k, v in logs.items():
            history.log(k, v)
        history.epochs = epoch + 1
        if verbose:
            print(f"epoch {epoch + 1}/{epochs} " + " ".join(
                f"{k}={v:.4g}" for k, v in logs.items()), flush=True)
        if plateau is not None:
            plateau.step(logs.get("val_loss", logs["loss"]))
        stop = None
        if monitor is not None:
            if monitor not in logs:
                raise ValueError(f"early stopping monitors {monitor!r}, which is not logged "
                                 f"(logged: {sorted(logs)})")
            value = logs[monitor]
            sign = -1.0 if "accuracy" in monitor else 1.0
            if best is None or sign * value < sign * best - early_stopping.min_delta:
                best, best_epoch, wait = value, epoch, 0
                if early_stopping.restore_best:
                    best_params = {dt: b.copy() for dt, b in model.flat.buffers.items()}
            else:
                wait += 1
                if wait >= early_stopping.patience:
                    stop = f"no improvement of {monitor} for {wait} epochs"
        if loss_tol is not None and logs["loss"] <= loss_tol:
            stop = stop or f"loss {logs['loss']:.4g} <= loss_tol"
        if max_steps is not None and history.steps >= max_steps:
            stop = stop or f"reached max_steps={max_steps}"
        for cb in callbacks:
            if cb(epoch, logs):
                stop = stop or f"callback {getattr(cb, '__name__', cb)!r}"
        if stop:
            history.stopped_early = stop
            break
    if best_params is not None and best_epoch != history.epochs - 1:
        for dt, b in model.flat.buffers.items():
            b[...] = best_params[dt]
    if dist is not None:
        dist.check_in_sync()
    return history
