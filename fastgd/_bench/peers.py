"""The NumPy peers: each rule written carefully in place with array expressions.

A peer is what a user would write by hand without fastgd: whole-array NumPy (or CuPy)
operations with ``out=`` and in-place operators, one or two preallocated temporaries, no
allocation per step. ``fastgd bench``'s "vs numpy" column is fastgd's speed-up over these,
so each is tested against the reference formulas (``tests/test_bench_peers.py``). A peer
implements its rule's benchmark configuration (the registry's ``bench``), not every option.

Each ``peer(param, g, hp)`` returns the step function; ``hp`` holds every hyperparameter
of the rule (its class defaults with the benchmark configuration on top).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from fastgd import _backend

__all__ = ["PEERS", "benchmark_hyperparameters", "numpy_step"]

Step = Callable[[], None]


def _moments(xp: Any, g: Any, m: Any, v: Any, t: Any, b1: float, b2: float) -> None:
    """Adam's two moments in place: m += (1 - b1)(g - m); v = b2 v + (1 - b2) g^2."""
    xp.subtract(g, m, out=t)
    xp.multiply(t, 1 - b1, out=t)
    xp.add(m, t, out=m)
    xp.multiply(v, b2, out=v)
    xp.multiply(g, g, out=t)
    xp.multiply(t, 1 - b2, out=t)
    xp.add(v, t, out=v)


def sgd(p: Any, g: Any, hp: Mapping[str, Any]) -> Step:
    """SGD with momentum (no dampening, no decay): buf = mu buf + g; p -= lr buf."""
    xp = _backend.xp_of(p)
    t, buf = xp.empty_like(p), xp.zeros_like(p)
    lr, mu = hp["lr"], hp["momentum"]

    def step() -> None:
        xp.multiply(buf, mu, out=buf)
        xp.add(buf, g, out=buf)
        xp.multiply(buf, lr, out=t)
        xp.subtract(p, t, out=p)

    return step


def adagrad(p: Any, g: Any, hp: Mapping[str, Any]) -> Step:
    """Adagrad: s += g^2; p -= lr g / (sqrt(s) + eps)."""
    xp = _backend.xp_of(p)
    t, acc = xp.empty_like(p), xp.full_like(p, hp["initial_accumulator_value"])
    lr, eps = hp["lr"], hp["eps"]

    def step() -> None:
        xp.multiply(g, g, out=t)
        xp.add(acc, t, out=acc)
        xp.sqrt(acc, out=t)
        xp.add(t, eps, out=t)
        xp.divide(g, t, out=t)
        xp.multiply(t, lr, out=t)
        xp.subtract(p, t, out=p)

    return step


def adadelta(p: Any, g: Any, hp: Mapping[str, Any]) -> Step:
    """Adadelta: u = rho u + (1-rho) g^2; d = sqrt(a+eps)/sqrt(u+eps) g; p -= lr d.

    Then a = rho a + (1-rho) d^2.
    """
    xp = _backend.xp_of(p)
    t, d = xp.empty_like(p), xp.empty_like(p)
    u, a = xp.zeros_like(p), xp.zeros_like(p)
    lr, rho, eps = hp["lr"], hp["rho"], hp["eps"]

    def step() -> None:
        xp.multiply(u, rho, out=u)
        xp.multiply(g, g, out=t)
        xp.multiply(t, 1 - rho, out=t)
        xp.add(u, t, out=u)
        xp.add(u, eps, out=t)
        xp.sqrt(t, out=t)
        xp.add(a, eps, out=d)
        xp.sqrt(d, out=d)
        xp.divide(d, t, out=t)
        xp.multiply(t, g, out=t)
        xp.multiply(a, rho, out=a)
        xp.multiply(t, t, out=d)
        xp.multiply(d, 1 - rho, out=d)
        xp.add(a, d, out=a)
        xp.multiply(t, lr, out=t)
        xp.subtract(p, t, out=p)

    return step


def rmsprop(p: Any, g: Any, hp: Mapping[str, Any]) -> Step:
    """RMSprop: s = alpha s + (1-alpha) g^2; p -= lr g / (sqrt(s) + eps)."""
    xp = _backend.xp_of(p)
    t, sq = xp.empty_like(p), xp.zeros_like(p)
    lr, alpha, eps = hp["lr"], hp["alpha"], hp["eps"]

    def step() -> None:
        xp.multiply(sq, alpha, out=sq)
        xp.multiply(g, g, out=t)
        xp.multiply(t, 1 - alpha, out=t)
        xp.add(sq, t, out=sq)
        xp.sqrt(sq, out=t)
        xp.add(t, eps, out=t)
        xp.divide(g, t, out=t)
        xp.multiply(t, lr, out=t)
        xp.subtract(p, t, out=p)

    return step


def _adam(p: Any, g: Any, hp: Mapping[str, Any], decoupled: bool) -> Step:
    xp = _backend.xp_of(p)
    t, m, v = xp.empty_like(p), xp.zeros_like(p), xp.zeros_like(p)
    lr, (b1, b2), eps, wd = hp["lr"], hp["betas"], hp["eps"], hp["weight_decay"]
    count = [0]

    def step() -> None:
        count[0] += 1
        k = count[0]
        if decoupled:
            xp.multiply(p, 1 - lr * wd, out=p)
        _moments(xp, g, m, v, t, b1, b2)
        xp.sqrt(v, out=t)
        xp.divide(t, math.sqrt(1 - b2**k), out=t)
        xp.add(t, eps, out=t)
        xp.divide(m, t, out=t)
        xp.multiply(t, lr / (1 - b1**k), out=t)
        xp.subtract(p, t, out=p)

    return step


def adam(p: Any, g: Any, hp: Mapping[str, Any]) -> Step:
    """Adam (no weight decay): m, v; p -= lr/bc1 m / (sqrt(v)/sqrt(bc2) + eps)."""
    return _adam(p, g, hp, decoupled=False)


def adamw(p: Any, g: Any, hp: Mapping[str, Any]) -> Step:
    """AdamW: p *= 1 - lr wd, then Adam's step."""
    return _adam(p, g, hp, decoupled=True)


def adamax(p: Any, g: Any, hp: Mapping[str, Any]) -> Step:
    """Adamax: m; u = max(b2 u, |g| + eps); p -= lr/bc1 m / u."""
    xp = _backend.xp_of(p)
    t, m, u = xp.empty_like(p), xp.zeros_like(p), xp.zeros_like(p)
    lr, (b1, b2), eps = hp["lr"], hp["betas"], hp["eps"]
    count = [0]

    def step() -> None:
        count[0] += 1
        xp.subtract(g, m, out=t)
        xp.multiply(t, 1 - b1, out=t)
        xp.add(m, t, out=m)
        xp.multiply(u, b2, out=u)
        xp.abs(g, out=t)
        xp.add(t, eps, out=t)
        xp.maximum(u, t, out=u)
        xp.divide(m, u, out=t)
        xp.multiply(t, lr / (1 - b1 ** count[0]), out=t)
        xp.subtract(p, t, out=p)

    return step


def nadam(p: Any, g: Any, hp: Mapping[str, Any]) -> Step:
    """NAdam: torch's form with the momentum schedule mu_t and its running product."""
    xp = _backend.xp_of(p)
    t, d = xp.empty_like(p), xp.empty_like(p)
    m, v = xp.zeros_like(p), xp.zeros_like(p)
    lr, (b1, b2), eps, psi = hp["lr"], hp["betas"], hp["eps"], hp["momentum_decay"]
    count, prod = [0], [1.0]

    def step() -> None:
        count[0] += 1
        k = count[0]
        mu = b1 * (1 - 0.5 * 0.96 ** (k * psi))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((k + 1) * psi))
        prod[0] *= mu
        _moments(xp, g, m, v, t, b1, b2)
        xp.divide(v, 1 - b2**k, out=d)
        xp.sqrt(d, out=d)
        xp.add(d, eps, out=d)
        xp.divide(g, d, out=t)
        xp.multiply(t, lr * (1 - mu) / (1 - prod[0]), out=t)
        xp.subtract(p, t, out=p)
        xp.divide(m, d, out=t)
        xp.multiply(t, lr * mu_next / (1 - prod[0] * mu_next), out=t)
        xp.subtract(p, t, out=p)

    return step


def radam(p: Any, g: Any, hp: Mapping[str, Any]) -> Step:
    """RAdam: the rectified step once rho_t > 5, un-adapted momentum before."""
    xp = _backend.xp_of(p)
    t, d = xp.empty_like(p), xp.empty_like(p)
    m, v = xp.zeros_like(p), xp.zeros_like(p)
    lr, (b1, b2), eps = hp["lr"], hp["betas"], hp["eps"]
    count = [0]

    def step() -> None:
        count[0] += 1
        k = count[0]
        _moments(xp, g, m, v, t, b1, b2)
        bc2 = 1 - b2**k
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * k * b2**k / bc2
        xp.multiply(m, lr / (1 - b1**k), out=t)
        if rho_t > 5:
            r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                          / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            xp.sqrt(v, out=d)
            xp.add(d, eps, out=d)
            xp.divide(t, d, out=t)
            xp.multiply(t, math.sqrt(bc2) * r, out=t)
        xp.subtract(p, t, out=p)

    return step


def lion(p: Any, g: Any, hp: Mapping[str, Any]) -> Step:
    """Lion (no weight decay): p -= lr sign(b1 m + (1-b1) g); m = b2 m + (1-b2) g."""
    xp = _backend.xp_of(p)
    t, d, m = xp.empty_like(p), xp.empty_like(p), xp.zeros_like(p)
    lr, (b1, b2) = hp["lr"], hp["betas"]

    def step() -> None:
        xp.multiply(m, b1, out=t)
        xp.multiply(g, 1 - b1, out=d)
        xp.add(t, d, out=t)
        xp.sign(t, out=t)
        xp.multiply(t, lr, out=t)
        xp.subtract(p, t, out=p)
        xp.multiply(m, b2, out=m)
        xp.multiply(g, 1 - b2, out=d)
        xp.add(m, d, out=m)

    return step


#: peer name (the registry's ``numpy_peer``) -> peer
PEERS: dict[str, Callable[[Any, Any, Mapping[str, Any]], Step]] = {
    f.__name__: f for f in (sgd, adagrad, adadelta, rmsprop, adam, adamw, adamax, nadam,
                            radam, lion)
}


def benchmark_hyperparameters(rule: str) -> dict[str, Any]:
    """Every hyperparameter of registry rule ``rule`` as benchmarked.

    Its class defaults, with the benchmark configuration on top.
    """
    import inspect

    from fastgd.optim.registry import RULES

    entry = RULES[rule]
    sig = inspect.signature(entry.cls.__init__)
    hp = {k: v.default for k, v in sig.parameters.items()
          if v.default is not inspect.Parameter.empty and k != "nonfinite"}
    return {**hp, **entry.bench}


def numpy_step(rule: str, param: Any, g: Any) -> Step | None:
    """The NumPy (or CuPy) peer of registry rule ``rule`` at its benchmark configuration.

    Returns:
        The step function, or None if the rule has no peer.
    """
    from fastgd.optim.registry import RULES

    peer = RULES[rule].numpy_peer
    return None if peer is None else PEERS[peer](param, g, benchmark_hyperparameters(rule))
