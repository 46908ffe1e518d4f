"""Learning-rate controllers: stateful rules that rewrite the groups' learning rates.

Unlike the pure schedules of :mod:`fastgd.schedules` (functions of the step count), these
react to a metric: :class:`ReduceLROnPlateau` (torch's semantics) cuts the learning rate
when a metric stops improving, :class:`BoldDriver` grows it while the loss falls and cuts
it when the loss rises. Both need float learning rates in every group; both have
``state_dict`` / ``prepare_load`` for checkpoints.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastgd import _validate as V

__all__ = ["BoldDriver", "ReduceLROnPlateau"]


def _float_lrs(optimizer: Any, who: str) -> None:
    for gi, group in enumerate(optimizer.param_groups):
        lr = group["lr"]
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
            raise TypeError(f"{who} rewrites learning rates, but param group {gi} has a "
                            f"schedule as lr; use a float lr with {who}")


class ReduceLROnPlateau:
    """Reduce the learning rate when a metric stops improving (torch's semantics).

    Call :meth:`step` with the metric once per evaluation (e.g. per epoch). After
    ``patience`` evaluations without improvement beyond ``threshold``, every group's
    learning rate is multiplied by ``factor`` (not below ``min_lr``; changes smaller than
    ``eps`` are ignored), then ``cooldown`` evaluations pass before counting again.

    Args:
        optimizer: a fastgd optimizer whose groups have float learning rates.
        mode: ``"min"`` (lower is better) or ``"max"``.
        factor: multiplier in [0, 1).
        patience: evaluations without improvement to tolerate.
        threshold: what counts as an improvement.
        threshold_mode: ``"rel"`` (``best * (1 -/+ threshold)``) or ``"abs"``.
        cooldown: evaluations to wait after a reduction.
        min_lr: a floor, one float or one per group.
        eps: minimal change of the learning rate.

    Example:
        >>> import numpy as np, fastgd
        >>> opt = fastgd.SGD([np.zeros(2)], lr=1.0)
        >>> plateau = ReduceLROnPlateau(opt, factor=0.5, patience=1)
        >>> [plateau.step(loss) for loss in [1.0, 1.0, 1.0]]
        [False, False, True]
        >>> opt.param_groups[0]["lr"]
        0.5
    """

    def __init__(self, optimizer: Any, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float | Sequence[float] = 0.0,
                 eps: float = 1e-8) -> None:
        _float_lrs(optimizer, "ReduceLROnPlateau")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        factor = V.real("factor", factor)
        if not 0.0 <= factor < 1.0:
            raise ValueError(f"Factor should be < 1.0. (factor must be in [0, 1), got {factor})")
        n = len(optimizer.param_groups)
        mins = list(min_lr) if isinstance(min_lr, Sequence) else [min_lr] * n
        if len(mins) != n:
            raise ValueError(f"expected {n} min_lr values, got {len(mins)}")
        self.optimizer = optimizer
        self.mode, self.threshold_mode = mode, threshold_mode
        self.factor = factor
        self.patience = V.nonneg_int("patience", patience)
        self.threshold = V.nonneg("threshold", threshold)
        self.cooldown = V.nonneg_int("cooldown", cooldown)
        self.min_lrs = [V.lr(m, "min_lr") for m in mins]
        self.eps = V.nonneg("eps", eps)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    def _better(self, a: float, best: float) -> bool:
        if self.mode == "min":
            ref = best * (1.0 - self.threshold) if self.threshold_mode == "rel" \
                else best - self.threshold
            return a < ref
        ref = best * (1.0 + self.threshold) if self.threshold_mode == "rel" \
            else best + self.threshold
        return a > ref

    def step(self, metric: float) -> bool:
        """Record one evaluation of the metric; returns whether the lr was reduced."""
        current = float(metric)  # NaN never counts as an improvement
        _float_lrs(self.optimizer, "ReduceLROnPlateau")
        self.last_epoch += 1
        if self._better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            reduced = False
            for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
                old = float(group["lr"])
                new = max(old * self.factor, min_lr)
                if old - new > self.eps:
                    group["lr"] = new
                    reduced = True
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
            return reduced
        return False

    def state_dict(self) -> dict[str, Any]:
        """Plain data: the counters and the best metric so far."""
        return {"best": self.best, "num_bad_epochs": self.num_bad_epochs,
                "cooldown_counter": self.cooldown_counter, "last_epoch": self.last_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` data (checked first)."""
        self.prepare_load(state)()

    def prepare_load(self, state: Mapping[str, Any]) -> Callable[[], None]:
        """Check :meth:`state_dict` data; return the function that restores it."""
        keys = {"best", "num_bad_epochs", "cooldown_counter", "last_epoch"}
        if not isinstance(state, Mapping) or set(state) != keys:
            raise ValueError(f"ReduceLROnPlateau state must have keys {sorted(keys)}")
        if not isinstance(state["best"], (int, float)) or isinstance(state["best"], bool):
            raise ValueError(f"ReduceLROnPlateau state 'best' must be a number, got "
                             f"{state['best']!r}")
        best = float(state["best"])
        counters = {k: V.nonneg_int(k, state[k]) for k in keys - {"best"}}

        def apply() -> None:
            self.best = best
            for k, v in counters.items():
                setattr(self, k, v)

        return apply


class BoldDriver:
    """The "bold driver" rule: grow the lr while the loss falls, cut it when it rises.

    Call :meth:`step` with the loss at the current parameters after every optimizer step.
    If the loss went down (or it is the first call), every group's lr is multiplied by
    ``increase``; if it went up, by ``decrease``, and with ``undo=True`` the parameters
    and optimizer state go back to where they were before the step that made it worse
    (this keeps a copy of both, taken at each accepted step).

    Args:
        optimizer: a fastgd optimizer whose groups have float learning rates.
        increase: factor >= 1 applied after an improvement.
        decrease: factor in (0, 1] applied after a worse loss.
        undo: restore the parameters and optimizer state after a worse loss.
        max_lr: an upper bound for the lr.

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.array([3.0])
        >>> opt = fastgd.SGD([w], lr=0.1)
        >>> driver = BoldDriver(opt, increase=1.1, decrease=0.5)
        >>> driver.step(float(w[0] ** 2))
        True
        >>> opt.param_groups[0]["lr"]
        0.11000000000000001
    """

    def __init__(self, optimizer: Any, increase: float = 1.05, decrease: float = 0.5,
                 undo: bool = False, max_lr: float = math.inf) -> None:
        _float_lrs(optimizer, "BoldDriver")
        inc, dec = V.real("increase", increase), V.real("decrease", decrease)
        if inc < 1.0:
            raise ValueError(f"increase must be >= 1, got {increase!r}")
        if not 0.0 < dec <= 1.0:
            raise ValueError(f"decrease must be in (0, 1], got {decrease!r}")
        self.optimizer, self.increase, self.decrease = optimizer, inc, dec
        self.undo = V.flag("undo", undo)
        if not (isinstance(max_lr, (int, float)) and max_lr > 0):
            raise ValueError(f"max_lr must be > 0, got {max_lr!r}")
        self.max_lr = float(max_lr)
        self.last_loss: float | None = None
        self._saved: tuple[list[Any], dict[str, Any]] | None = None
        if self.undo:
            self._snapshot()

    def _snapshot(self) -> None:
        opt = self.optimizer
        self._saved = ([p.copy() for p in opt.params], opt.state_dict())

    def step(self, loss: float) -> bool:
        """Record the loss after a step; returns True if the step was kept.

        A NaN or inf loss counts as worse.
        """
        loss = float(loss)
        _float_lrs(self.optimizer, "BoldDriver")
        better = self.last_loss is None or (math.isfinite(loss) and loss <= self.last_loss)
        factor = self.increase if better else self.decrease
        if better:
            self.last_loss = loss
        elif self.undo and self._saved is not None:
            params, sd = self._saved
            for p, saved in zip(self.optimizer.params, params):
                p[...] = saved
            lrs = [g["lr"] for g in self.optimizer.param_groups]
            self.optimizer.load_state_dict(sd)
            for g, lr in zip(self.optimizer.param_groups, lrs):
                g["lr"] = lr
        for group in self.optimizer.param_groups:
            group["lr"] = min(float(group["lr"]) * factor, self.max_lr)
        if better and self.undo:
            self._snapshot()
        return better

    def state_dict(self) -> dict[str, Any]:
        """Plain data: the last accepted loss (the undo copy is not part of it)."""
        return {"last_loss": self.last_loss}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` data."""
        self.prepare_load(state)()

    def prepare_load(self, state: Mapping[str, Any]) -> Callable[[], None]:
        """Check :meth:`state_dict` data; return the function that restores it.

        With ``undo``, restoring also takes a fresh copy of the parameters and optimizer
        state as they are then (load those first).
        """
        if not isinstance(state, Mapping) or set(state) != {"last_loss"}:
            raise ValueError("BoldDriver state must have the key 'last_loss'")
        v = state["last_loss"]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError(f"BoldDriver state 'last_loss' must be a number or None, got {v!r}")

        def apply() -> None:
            self.last_loss = None if v is None else float(v)
            if self.undo:
                self._snapshot()

        return apply
