"""SparseAdam: Adam for embedding tables, updating only the rows a gradient touches."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fastgd import _backend
from fastgd import _validate as V
from fastgd.averaging import Averaging
from fastgd.optim._functional import flat_arrays, scale_of
from fastgd.optim.base import Optimizer, Scalars
from fastgd.schedules import lr_or_schedule
from fastgd.sparse import SparseGrad

__all__ = ["SparseAdam", "sparse_adam_"]


def _positive_lr(name: str, value: Any) -> Any:
    """A learning rate > 0, or a schedule (torch's SparseAdam: "Invalid learning rate")."""
    lr = lr_or_schedule(name, value)
    if not callable(lr) and lr <= 0.0:
        raise ValueError(f"Invalid learning rate: {value!r} ({name} must be > 0)")
    return lr


def _launch_sparse_adam(g: SparseGrad, p: Any, m: Any, v: Any, *, gs: Any, step: float,
                        lr: float, beta1: float, beta2: float, eps: float) -> None:
    if not g.indices.size:
        return  # an empty gradient changes nothing (its step is still counted, as torch)
    rows = p.shape[0]
    step_size = lr * (1.0 - beta2**step) ** 0.5 / (1.0 - beta1**step)
    vals = g.values.reshape(g.indices.size, -1)
    # kernels/cpu/sparse.py: sparse_adam(rows, vals, gs, one_minus_beta1, one_minus_beta2,
    # eps, step_size | p, m, v), the table arrays as (rows, row length)
    _backend.launch_sized(vals.size, "sparse", "sparse_adam", (), g.indices, vals, gs,
                          1.0 - beta1, 1.0 - beta2, eps, step_size, p.reshape(rows, -1),
                          m.reshape(rows, -1), v.reshape(rows, -1))


def sparse_adam_(param: Any, grad: SparseGrad, exp_avg: Any, exp_avg_sq: Any, *, step: int,
                 lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, maximize: bool = False, grad_scale: float = 1.0) -> None:
    r"""One SparseAdam step, in place, on the rows ``grad`` touches (torch's update).

    For each touched row (repeated rows summed first):

    .. math::
        m \leftarrow m + (1-\beta_1)(g - m);\quad v \leftarrow v + (1-\beta_2)(g^2 - v);\quad
        \theta \leftarrow \theta - \gamma\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}
        \frac{m}{\sqrt v + \epsilon}

    The other rows of ``param``, ``exp_avg`` and ``exp_avg_sq`` are neither read nor
    written: the cost is that of the touched rows, not of the table.

    Args:
        param: the table, ``(rows, ...)``, updated in place.
        grad: a :class:`~fastgd.SparseGrad` of its rows.
        exp_avg: :math:`m`, the table's shape.
        exp_avg_sq: :math:`v`, the table's shape.
        step: 1-based number of this step :math:`t`.
        lr: :math:`\gamma` > 0.
        beta1: :math:`\beta_1`.
        beta2: :math:`\beta_2`.
        eps: :math:`\epsilon`, added to the uncorrected :math:`\sqrt v` (torch's form).
        maximize: ascend instead of descend.
        grad_scale: factor applied to the gradient first.

    Example:
        >>> import numpy as np, fastgd
        >>> table = np.zeros((4, 2)); m, v = np.zeros_like(table), np.zeros_like(table)
        >>> g = fastgd.SparseGrad(np.array([2]), np.ones((1, 2)))
        >>> sparse_adam_(table, g, m, v, step=1, lr=0.1)
        >>> table.round(6)
        array([[ 0. ,  0. ],
               [ 0. ,  0. ],
               [-0.1, -0.1],
               [ 0. ,  0. ]])
    """
    step = V.step(step)
    hp = SparseAdam.check({"lr": lr, "betas": (beta1, beta2), "eps": eps,
                           "maximize": maximize}, schedules=False)
    if hp["lr"] <= 0:
        raise ValueError(f"Invalid learning rate: {lr!r} (lr must be > 0)")
    gs = scale_of(maximize, grad_scale)
    if not isinstance(grad, SparseGrad):
        raise TypeError(f"grad must be a SparseGrad, got {type(grad).__name__}; for dense "
                        "gradients use adam_")
    # the tables' checks (dtype, shape, writeable, contiguous, no shared memory); the
    # kernel takes them as (rows, row length)
    flat_arrays(param, param, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    grad.check_fits(param, "grad")
    (b1, b2) = hp["betas"]
    _launch_sparse_adam(grad.coalesce(), param, exp_avg, exp_avg_sq, gs=gs, step=step,
                        lr=hp["lr"], beta1=b1, beta2=b2, eps=hp["eps"])


class SparseAdam(Optimizer):
    r"""SparseAdam, as torch.optim.SparseAdam: Adam on the rows a sparse gradient touches.

    For an embedding table and a row-sparse gradient:

    .. math::
        m_r \leftarrow m_r + (1-\beta_1)(g_r - m_r);\quad
        v_r \leftarrow v_r + (1-\beta_2)(g_r^2 - v_r);\quad
        \theta_r \leftarrow \theta_r - \gamma\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}
        \frac{m_r}{\sqrt{v_r} + \epsilon}

    for every touched row :math:`r`; the others are neither read nor written, so a step
    costs the touched rows, not the table. Gradients are :class:`~fastgd.SparseGrad`
    (``indices``, ``values``; repeated rows are summed, as torch coalesces); a dense
    gradient is refused, as torch does. The step count advances for every parameter given
    a gradient, also an empty one.

    Args:
        params: tables (arrays of at least one dimension: rows first), or param groups.
        lr: :math:`\gamma` > 0.
        betas: :math:`(\beta_1, \beta_2)`.
        eps: :math:`\epsilon`.
        maximize: ascend instead of descend.
        nonfinite: ``"propagate"``, ``"skip"`` or ``"raise"`` for NaN/inf gradients
            (see :class:`~fastgd.Optimizer`).
        average: weight averaging, :class:`~fastgd.EMA` or :class:`~fastgd.SWA`, kept
            beside the parameters (see :meth:`~fastgd.Optimizer.averaged`).

    Example:
        >>> import numpy as np, fastgd
        >>> table = np.zeros((1000, 4), np.float32)
        >>> opt = fastgd.SparseAdam([table], lr=0.1)
        >>> opt.step([fastgd.SparseGrad(np.array([7, 7, 3]), np.ones((3, 4), np.float32))])
        True
        >>> table[7].round(4), table[0]
        (array([-0.1, -0.1, -0.1, -0.1], dtype=float32), array([0., 0., 0., 0.], dtype=float32))
    """

    per_parameter = True
    sparse_gradients = True

    #: name -> checker (fastgd._validate); Optimizer.check applies them
    hyperparameters: ClassVar[dict[str, Any]] = {
        "lr": _positive_lr,
        "betas": V.betas,
        "eps": V.epsilon,
        "maximize": V.flag,
    }

    def __init__(self, params: Any, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, *,
                 maximize: bool = False, nonfinite: str = "propagate",
                 average: Averaging | None = None,
                 **torch_options: Any) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "maximize": maximize}, nonfinite=nonfinite,
                         average=average, **torch_options)

    def _check_param(self, p: Any, name: str) -> None:
        if p.ndim < 1:
            raise ValueError(f"{name} is 0-d: SparseAdam updates rows of tables (arrays of "
                             "at least one dimension)")

    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def _update(self, hp, ss: Scalars, gs, g, p, state) -> Scalars:
        step = ss["step"] + 1.0
        beta1, beta2 = hp["betas"]
        _launch_sparse_adam(g, p, state[0], state[1], gs=gs, step=step, lr=hp["lr"],
                            beta1=beta1, beta2=beta2, eps=hp["eps"])
        return {"step": step}
