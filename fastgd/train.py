"""The training loop: batch, stochastic and mini-batch gradient descent for fastgd models.

``fit(model, optimizer, X, y, ...)`` runs epochs of ``model.loss_and_grad`` (gradients into
the model's flat buffer) and ``optimizer.step()``. Each epoch shuffles once, with a seed,
into preallocated buffers and takes contiguous slices as batches (no fancy-indexed copy per
batch). It tracks the training loss (the mean over the epoch's batches), validation loss
and accuracy, wall time, and stops early on patience, a loss tolerance, a step budget or a
callback.
"""

from __future__ import annotations

import functools
import itertools
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastgd import _backend
from fastgd import _validate as V

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
    """Batches of rows ``perm[i : i + len(yb)]`` of ``X`` and ``y``, gathered into ``Xb``, ``yb``.

    A :class:`~fastgd.models.mlp._CSR` ``X`` (``Xb`` None) gives selections of its rows
    instead (no copy). Each batch overwrites the previous one: consume it before asking
    for the next.
    """
    n, size = X.shape[0], yb.shape[0]
    for i in range(0, n, size):
        rows = perm[i : i + size]
        m = rows.shape[0]
        _backend.launch("gather", "gather_rows", (), y.reshape(n, -1), rows,
                        _backend.NO_ROWS, yb[:m].reshape(m, -1))
        if Xb is None:
            yield X.take(rows), yb[:m]
        else:  # the next batch's rows are prefetched while this one is used
            _backend.launch("gather", "gather_rows", (), X.reshape(n, -1), rows,
                            perm[i + size : i + 2 * size], Xb[:m].reshape(m, -1))
            yield Xb[:m], yb[:m]


def _agree(dist: Any, what: str, info: dict[str, Any]) -> None:
    """Raise ValueError on every rank unless all ranks pass the same ``info``."""
    infos = dist.comm.allgather(info)
    for rank, other in enumerate(infos):
        if other != infos[0]:
            diff = sorted(k for k in info if other.get(k) != infos[0].get(k))
            raise ValueError(
                f"the MPI ranks disagree on {what}: " + "; ".join(
                    f"{k}: rank 0 has {infos[0].get(k)!r}, rank {rank} has {other.get(k)!r}"
                    for k in diff)
                + ". Every rank must call fit with the same data and arguments")


def _agreed_batches(dist: Any, it: Iterable[tuple[Any, Any]], epoch: int
                    ) -> Iterator[tuple[Any, Any]]:
    """The batches of ``batches(epoch)``, checked step by step against the other ranks.

    Each step the ranks exchange whether they have a batch, its rows and its column
    shapes: all stop together when none has one more, and a rank that runs out early or
    yields another shape ends the job on every rank with a ValueError instead of a hang.
    ``dist.rows_in_step`` is set to the rows of the whole (all ranks') batch.
    """
    items = iter(it)
    for k in itertools.count():
        item = next(items, None)
        mine = (None if item is None else
                (len(item[0]), tuple(item[0].shape[1:]), str(item[0].dtype),
                 tuple(getattr(item[1], "shape", (0,))[1:])))
        everyone = dist.comm.allgather(mine)
        if all(x is None for x in everyone):
            return
        short = [r for r, x in enumerate(everyone) if x is None]
        if short:
            raise ValueError(
                f"MPI ranks {short} have no batch {k + 1} of epoch {epoch + 1} while ranks "
                f"{[r for r, x in enumerate(everyone) if x is not None]} do: every rank's "
                "batches(epoch) must yield the same number of batches")
        shapes = {x[1:] for x in everyone}
        if len(shapes) > 1:
            raise ValueError(f"MPI ranks yield batches of different column shapes or dtypes "
                             f"in batch {k + 1} of epoch {epoch + 1}: {sorted(shapes)}")
        dist.rows_in_step = sum(x[0] for x in everyone)
        yield item


def _dense(name: str, a: Any) -> Any:
    """``a``, refused with a clear error if it is a sparse matrix (models take dense data)."""
    if type(a).__module__.startswith("scipy.sparse"):
        raise TypeError(f"{name} is a scipy.sparse {type(a).__name__}; fastgd's models take "
                        f"dense arrays: pass {name.split()[-1]}.toarray() (the "
                        "fastgd.sklearn linear models take sparse input)")
    return a


def _finite(name: str, a: Any) -> None:
    """Raise ValueError if a float array holds NaN or inf (one read pass, on its device)."""
    if a.dtype.kind != "f" or not a.size:
        return
    flat = a.reshape(-1)
    if a.dtype not in _backend.FLOAT_DTYPES:
        bad = not bool(_backend.xp_of(a).isfinite(flat).all())
    else:
        bad = float(_backend.reduce("nonfinite", flat).sum()) != 0.0
    if bad:
        raise ValueError(f"{name} contains NaN or infinity (after conversion to {a.dtype}); "
                         "fit needs finite data")


def _params_finite(model: Any) -> bool:
    return all(not b.size or float(_backend.reduce("nonfinite", b).sum()) == 0.0
               for b in model.flat.buffers.values())


def _restore(model: Any, optimizer: Any, start: tuple[dict[Any, Any], dict[str, Any]]) -> None:
    buffers, state = start
    for dt, b in model.flat.buffers.items():
        b[...] = buffers[dt]
    optimizer.load_state_dict(state)


@_backend.on_model_device  # CuPy: on the model's GPU, whichever is current
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
            0 prints. The ranks compare their data's shapes and the arguments first (with
            ``batches``, every batch's rows and shapes), and a disagreement is a ValueError
            on every rank instead of a hang.

    Returns:
        The :class:`History`.

    Raises:
        ValueError: inconsistent or non-finite data (NaN or inf, also after the cast to
            the model's dtype), validation data that does not fit the model, an early
            stopping monitor this fit does not log, or bad arguments: all before any step.
            Also training that diverges (a non-finite loss or parameters after an epoch):
            the model and optimizer are then restored to their state before ``fit``.
        TypeError: a scipy.sparse ``X`` (fastgd's models take dense arrays).

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
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(
            max_steps, (int, np.integer)) or max_steps < 1):
        raise ValueError(f"max_steps must be an integer >= 1 or None, got {max_steps!r}")
    if loss_tol is not None:
        loss_tol = V.real("loss_tol", loss_tol)
    if clip_norm is not None:
        clip_norm = V.nonneg("clip_norm", clip_norm)
    for i, cb in enumerate(callbacks):
        if not callable(cb):
            raise TypeError(f"callbacks[{i}] must be callable, got {cb!r}")
    if plateau is not None and not callable(getattr(plateau, "step", None)):
        raise TypeError(f"plateau must be a ReduceLROnPlateau or BoldDriver, got {plateau!r}")
    step_loss = model.loss_and_grad
    prepare = getattr(model, "_prepare", None)
    correct = None  # the count of correct predictions of the epoch's batches, if counted
    if batches is None:
        if X is None or y is None:
            raise ValueError("fit needs X and y, or a batches function")
        X, y = _dense("X", X), _dense("y", y)
        xp = _backend.xp_of(X)
        X, y = xp.asarray(X), xp.asarray(y)
        if X.ndim < 1 or y.ndim < 1:
            raise ValueError(f"X and y need one row per sample, got shapes {X.shape} and "
                             f"{y.shape}")
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
        if callable(prepare):
            # fastgd's models: check and convert X and y once; the batches, row slices of
            # them, then skip the checks, and the loss stays on the GPU until the epoch ends
            X, y = prepare(X, y)
            step_loss = model._loss_and_grad
            # classifiers: each batch's correct predictions are counted in its forward
            # pass (before its update), on the device: the epoch's accuracy without a
            # pass over the training data
            if getattr(model, "_correct_units", lambda n: 0)(1):
                correct = xp.zeros(1)
                step_loss = functools.partial(model._loss_and_grad, correct=correct)
        else:
            model.loss(X[:1], y[:1])  # checks X and y once, before any step
        _finite("X", X)
        _finite("y", y)
    elif not callable(batches):
        raise TypeError(f"batches must be a function of the epoch, got {batches!r}")
    elif callable(prepare):
        # fastgd's models: each given batch is checked (a label range is one host read)
        # and its loss stays on the device until the epoch ends, as for X and y

        def step_loss(xb: Any, yb: Any) -> Any:
            return model._loss_and_grad(*prepare(xb, yb))
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val)")
        xv, yv = (_dense("validation_data X", v) for v in validation_data)
        if callable(prepare):
            xv, yv = prepare(xv, yv)
        else:
            model.loss(xv[:1], yv[:1])
        _finite("validation_data X", xv)
        _finite("validation_data y", yv)
        validation_data = (xv, yv)
    classifier = getattr(model, "output", "regression") != "regression"
    logged = {"loss", "time", "lr"}
    if batches is None and classifier:
        logged.add("accuracy")
    if validation_data is not None:
        logged |= {"val_loss", "val_accuracy"} if classifier else {"val_loss"}
    monitor = None
    if early_stopping is not None:
        if not isinstance(early_stopping, EarlyStopping):
            raise TypeError(f"early_stopping must be an EarlyStopping, got {early_stopping!r}")
        monitor = early_stopping.monitor or ("val_loss" if validation_data else "loss")
        if monitor not in logged:
            raise ValueError(f"early stopping monitors {monitor!r}, which this fit does not "
                             f"log (it logs {sorted(logged)}); pass validation_data to "
                             "monitor val_loss")
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
        info: dict[str, Any] = {
            "batch_size": batch_size, "epochs": epochs, "max_steps": max_steps,
            "shuffle": shuffle,
            "validation": None if validation_data is None else (
                tuple(validation_data[0].shape), tuple(validation_data[1].shape)),
            "parameters": [(str(dt), b.size) for dt, b in model.flat.buffers.items()],
        }
        if batches is None:  # with batches(), they are compared batch by batch
            info.update(rows=n, X=(tuple(X.shape[1:]), str(X.dtype)),
                        y=(tuple(y.shape[1:]), str(y.dtype)))
        _agree(dist, "fit's data and arguments", info)
        dist.broadcast_parameters()
        if dist.rank != 0:
            progress, verbose = False, False
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    history = History()
    best, best_epoch, wait, best_params = None, -1, 0, None
    # what fit restores if training diverges: the model and optimizer as they came in
    start = ({dt: b.copy() for dt, b in model.flat.buffers.items()}, optimizer.state_dict())
    shuffle = shuffle and batches is None and batch_size < n  # a full batch has no order
    # a mostly-zero X (a fastgd MLP's input with few nonzeros, see MLP._csr_pays): its
    # nonzeros are gathered once and the first layer's products run on the CSR kernels
    # (serially, as every kernel in this loop), a batch being a selection of its rows
    Xc = None
    if (batches is None and dist is None and callable(getattr(model, "_csr_pays", None))
            and model._csr_pays(X, 1)):
        from fastgd.models.mlp import _CSR

        Xc = _CSR.from_dense(X)
    if shuffle:
        X, y = xp.ascontiguousarray(X), xp.ascontiguousarray(y)
        # one batch of rows at a time is gathered (in the serial loop below) into these:
        # the data is never copied whole, and each gathered batch is still in cache
        X_buf = None if Xc is not None else xp.empty((batch_size, *X.shape[1:]), X.dtype)
        y_buf = xp.empty((batch_size, *y.shape[1:]), y.dtype)
    for epoch in range(epochs):
        t0 = time.perf_counter()
        if batches is None:
            if shuffle:
                it: Iterable[tuple[Any, Any]] = _shuffled_batches(
                    X if Xc is None else Xc, y, xp.asarray(rng.permutation(n)), X_buf, y_buf)
            else:
                it = ((X[i : i + batch_size] if Xc is None
                       else Xc.take(slice(i, i + batch_size)), y[i : i + batch_size])
                      for i in range(0, n, batch_size))
            total = math.ceil(n / batch_size)
        else:
            it = batches(epoch)
            total = 0
        bar = _progress(total, progress, f"epoch {epoch + 1}/{epochs}") if total else None
        loss_sum, count, scored = 0.0, 0, 0
        if correct is not None:
            correct[...] = 0.0
        with _backend.serial_kernels():  # BLAS threads and Numba threads would contend
            if dist is not None and batches is not None:
                it = _agreed_batches(dist, it, epoch)
            for xb, yb in it:
                if dist is None:
                    loss_sum += step_loss(xb, yb)
                    scored += len(xb)
                else:
                    if batches is None:  # this rank's shard of the global batch
                        n_total = len(xb)
                        part = dist.shard(n_total)
                        xb, yb = xb[part], yb[part]
                        loss_fn = step_loss
                    else:
                        n_total = dist.rows_in_step
                        loss_fn = step_loss
                    n_local = len(xb)
                    scored += n_local
                    local = loss_fn(xb, yb) if n_local else 0.0
                    if not n_local:
                        model.flat.zero_grad()
                    dist.allreduce_gradients(n_local, n_total)
                    # this rank's share of the batch's mean loss, summed over the epoch's
                    # batches on the device; one allreduce at the end of the epoch
                    loss_sum += local * (n_local / max(n_total, 1))
                count += 1
                if optimizer.step(clip_norm=clip_norm):
                    history.steps += 1
                if bar is not None:
                    bar.update(1)
                if max_steps is not None and history.steps >= max_steps:
                    break
        if bar is not None:
            bar.close()
        if correct is not None:  # read once per epoch, with the loss
            right = float(correct[0])
            if dist is not None:
                right, scored = dist.allreduce_scalar(right), dist.allreduce_scalar(scored)
        if dist is not None:
            loss_sum = dist.allreduce_scalar(float(loss_sum))
        logs: dict[str, float] = {"loss": float(loss_sum) / max(count, 1)}
        if not math.isfinite(logs["loss"]) or not _params_finite(model):
            _restore(model, optimizer, start)
            raise ValueError(
                f"training diverged: the loss is {logs['loss']} after epoch {epoch + 1} "
                "(the parameters are not finite); the model and optimizer were restored to "
                "their state before fit. The input data may contain large values and need "
                "to be scaled, or the learning rate may be too large"
            )
        if correct is not None:
            logs["accuracy"] = right / max(model._correct_units(int(scored)), 1)
        elif batches is None:
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
        if monitor is not None and monitor in logs:  # "lr" is not logged for schedules
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
