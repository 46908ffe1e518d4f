"""Gradient accumulation: k micro-batches, one optimizer step.

A two-line change in a loop: build a :class:`GradientAccumulator` around the optimizer and
call its :meth:`~GradientAccumulator.step` where ``opt.step`` was called.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fastgd import _backend
from fastgd.flat import flat_layout

__all__ = ["GradientAccumulator"]


class GradientAccumulator:
    r"""Sum the gradients of ``steps`` micro-batches, then take one optimizer step.

    .. math:: g_{window} = \frac{1}{k}\sum_{j=1}^{k} g_j\ \text{(mean)}\quad\text{or}\quad
       \sum_{j=1}^{k} g_j\ \text{(sum)}

    The sums live in a flat buffer per dtype (one extra copy of the gradients); the mean's
    ``1/k`` is folded into the update kernel (``opt.step(..., grad_scale=1/k)``), so it
    costs no pass. A parameter whose gradient is ``None`` in some micro-batches counts
    zero there; one with no gradient in the whole window is not stepped.

    Non-finite gradients: the optimizer's ``nonfinite`` policy applies to the whole window
    when it steps. With ``"propagate"`` a NaN micro-batch poisons the window's update (as
    it would in torch); with ``"skip"`` the window's step is skipped and its sums are
    dropped; with ``"raise"`` the step raises and the window is dropped as well.

    Args:
        optimizer: a fastgd optimizer.
        steps: micro-batches per optimizer step, ``k >= 1``.
        reduction: ``"mean"`` or ``"sum"``.

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.zeros(2)
        >>> acc = GradientAccumulator(fastgd.SGD([w], lr=1.0), steps=2)
        >>> acc.step([np.array([1.0, 2.0])]) is None     # accumulated
        True
        >>> acc.step([np.array([3.0, 4.0])])             # the mean is applied
        True
        >>> w
        array([-2., -3.])
    """

    def __init__(self, optimizer: Any, steps: int, reduction: str = "mean") -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.optimizer = optimizer
        self.steps = steps
        self.reduction = reduction
        params = optimizer.params
        self._xp = _backend.xp_of(params[0])
        self._device = params[0]  # CuPy: the sums live and add on the parameters' GPU
        with _backend.on_device_of(params[0]):
            _, self._sums = flat_layout([(p.shape, p.dtype) for p in params], self._xp)
        self._sum_spans = [s.reshape(-1) for s in self._sums]
        self._seen = [False] * len(params)
        self._spans = _backend.SpanMemo()  # runs of gradients and of sums, per (i, j)
        self._sum_multi: dict[tuple[int, int], Any] = {}  # runs of sums as MultiSpans
        #: Micro-batches accumulated in the current window.
        self.count = 0

    def _add(self, gl: Sequence[Any]) -> None:
        """Add the gradients to the sums: one kernel per run of gradients.

        A run: consecutive gradients of one dtype, all new or all already seen in the
        window. Gradients that lie back to back in one buffer (a FlatParams's) are added
        with one launch over the run, as the sums are laid out back to back per dtype
        too; separate NumPy arrays are copied into the sums by one ``np.concatenate`` or
        added by one multi-array launch.
        """
        i, n = 0, len(gl)
        while i < n:
            if gl[i] is None:
                i += 1
                continue
            j = i + 1
            while (j < n and gl[j] is not None and gl[j].dtype == gl[i].dtype
                   and self._seen[j] == self._seen[i]):
                j += 1
            g_run = self._spans(("grads", i, j), gl[i:j]) if j - i > 1 else None
            s_run = self._spans(("sums", i, j), self._sum_spans[i:j]) if j - i > 1 else None
            if g_run is not None and s_run is not None and s_run.size == g_run.size:
                self._accumulate(g_run, s_run, self._seen[i])
            elif s_run is not None and type(gl[i]) is np.ndarray:
                self._accumulate_separate(list(gl[i:j]), s_run, i, j)
            else:
                for k in range(i, j):
                    self._accumulate(gl[k].reshape(-1), self._sum_spans[k], self._seen[k])
            for k in range(i, j):
                self._seen[k] = True
            i = j

    def _accumulate_separate(self, gs: list[np.ndarray], s_run: np.ndarray, i: int,
                             j: int) -> None:
        """Separate NumPy gradients ``i:j`` into their sums (back to back in ``s_run``)."""
        if not self._seen[i]:
            np.concatenate(gs, axis=None, out=s_run)
            return
        sums = self._sum_multi.get((i, j))
        if sums is None:
            sums = self._sum_multi[(i, j)] = _backend.multi_span(self._sum_spans[i:j])
        _backend.launch("axpy", "axpy", (), _backend.multi_span(gs), 1.0, sums)

    def _accumulate(self, g: Any, s: Any, seen: bool) -> None:
        if not seen:
            self._xp.copyto(s, g)
        elif s.size:
            _backend.launch("axpy", "axpy", (), g, 1.0, s)

    def step(self, grads: Sequence[Any] | None = None) -> bool | None:
        """Add one micro-batch; at the end of a window, step the optimizer.

        Args:
            grads: as for the optimizer's ``step`` (omit with FlatParams).

        Returns:
            None if the micro-batch was only accumulated; at the end of a window, the
            optimizer step's result (True: applied, False: skipped as non-finite).

        Raises:
            The optimizer's errors for bad gradients (raised before anything is added) and
            :class:`fastgd.clip.NonFiniteGradientError` under ``nonfinite="raise"``.
        """
        gl = self.optimizer.resolve_grads(grads)
        if len(gl) != len(self._seen):
            raise ValueError(f"the optimizer has {len(gl)} parameters now, "
                             f"{len(self._seen)} when this accumulator was built; build a "
                             "new GradientAccumulator after changing its param_groups")
        with _backend.on_device_of(self._device):
            self._add(gl)
        self.count += 1
        if self.count < self.steps:
            return None
        return self.flush()

    def flush(self) -> bool | None:
        """Step on the micro-batches accumulated so far (e.g. at the end of an epoch).

        Returns:
            None if the window is empty, else the optimizer step's result. The mean
            divides by the number of micro-batches actually accumulated.
        """
        if self.count == 0:
            return None
        scale = 1.0 / self.count if self.reduction == "mean" else 1.0
        window = [s if seen else None for s, seen in zip(self._sums, self._seen)]
        try:
            return self.optimizer.step(window, grad_scale=scale)
        finally:
            self.count = 0
            self._seen = [False] * len(self._seen)
