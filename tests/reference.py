"""Naive NumPy update rules, written straight from the formulas (update-rules, torch 2.13).

Each ``ref_<rule>(p, g, state, hp)`` applies one step to ``p`` (a NumPy array, updated in
place), keeping its state in the dict ``state`` (created empty). Everything is computed
with whole-array NumPy expressions in the parameter's dtype; clarity over speed.
"""

from __future__ import annotations

import numpy as np


def _prep(p, g, hp, l2=True):
    g = -g if hp.get("maximize", False) else g
    wd = hp.get("weight_decay", 0.0)
    if l2 and wd != 0:
        g = g + wd * p
    return g


def ref_sgd(p, g, state, hp):
    g = _prep(p, g, hp)
    mu = hp.get("momentum", 0.0)
    if mu != 0:
        if "momentum_buffer" not in state:
            buf = g.copy()
        else:
            buf = mu * state["momentum_buffer"] + (1 - hp.get("dampening", 0.0)) * g
        state["momentum_buffer"] = buf
        g = g + mu * buf if hp.get("nesterov", False) else buf
    p -= hp["lr"] * g


def ref_adagrad(p, g, state, hp):
    t = state["step"] = state.get("step", 0) + 1
    g = _prep(p, g, hp)
    s = state.get("sum", np.full_like(p, hp.get("initial_accumulator_value", 0.0)))
    clr = hp["lr"] / (1 + (t - 1) * hp.get("lr_decay", 0.0))
    s = s + g * g
    state["sum"] = s
    p -= clr * (g / (np.sqrt(s) + hp.get("eps", 1e-10)))


def ref_adadelta(p, g, state, hp):
    g = _prep(p, g, hp)
    rho, eps = hp.get("rho", 0.9), hp.get("eps", 1e-6)
    u = rho * state.get("square_avg", np.zeros_like(p)) + (1 - rho) * g * g
    a = state.get("acc_delta", np.zeros_like(p))
    delta = np.sqrt(a + eps) / np.sqrt(u + eps) * g
    state["square_avg"] = u
    state["acc_delta"] = rho * a + (1 - rho) * delta * delta
    p -= hp.get("lr", 1.0) * delta


def ref_rmsprop(p, g, state, hp):
    g = _prep(p, g, hp)
    alpha, eps = hp.get("alpha", 0.99), hp.get("eps", 1e-8)
    sq = alpha * state.get("square_avg", np.zeros_like(p)) + (1 - alpha) * g * g
    state["square_avg"] = sq
    if hp.get("centered", False):
        ga = state.get("grad_avg", np.zeros_like(p))
        ga = ga + (1 - alpha) * (g - ga)
        state["grad_avg"] = ga
        avg = np.sqrt(sq - ga * ga) + eps
    else:
        avg = np.sqrt(sq) + eps
    mu = hp.get("momentum", 0.0)
    if mu > 0:
        buf = mu * state.get("momentum_buffer", np.zeros_like(p)) + g / avg
        state["momentum_buffer"] = buf
        p -= hp["lr"] * buf
    else:
        p -= hp["lr"] * g / avg


def _adam_moments(p, g, state, hp):
    """Step count, weight decay (L2 or decoupled) and Adam's two moments, shared by the
    Adam family. Returns (t, g, m, v, beta1, beta2)."""
    t = state["step"] = state.get("step", 0) + 1
    decoupled = hp.get("decoupled_weight_decay", False)
    g = _prep(p, g, hp, l2=not decoupled)
    if decoupled:
        p *= 1 - hp["lr"] * hp.get("weight_decay", 0.0)
    b1, b2 = hp.get("betas", (0.9, 0.999))
    m = state.get("exp_avg", np.zeros_like(p))
    m = m + (1 - b1) * (g - m)
    v = b2 * state.get("exp_avg_sq", np.zeros_like(p)) + (1 - b2) * g * g
    state["exp_avg"], state["exp_avg_sq"] = m, v
    return t, g, m, v, b1, b2


def ref_adam(p, g, state, hp):
    t, g, m, v, b1, b2 = _adam_moments(p, g, state, hp)
    if hp.get("amsgrad", False):
        v = np.maximum(state.get("max_exp_avg_sq", np.zeros_like(p)), v)
        state["max_exp_avg_sq"] = v
    bc1, bc2 = 1 - b1**t, 1 - b2**t
    eps = hp.get("eps", 1e-8)
    if hp.get("eps_mode", "torch") == "hat":  # Keras: lr_t = lr sqrt(bc2) / bc1
        v = v + hp.get("eps_root", 0.0) * bc2  # eps_root goes with the bias-corrected v
        p -= hp["lr"] * np.sqrt(bc2) / bc1 * m / (np.sqrt(v) + eps)
        return
    # optax: m_hat / (sqrt(v_hat + eps_root) + eps); torch when eps_root = 0
    denom = np.sqrt(v / bc2 + hp.get("eps_root", 0.0)) + eps
    p -= hp["lr"] / bc1 * (m / denom)


def ref_adamw(p, g, state, hp):
    ref_adam(p, g, state, {"weight_decay": 1e-2, **hp, "decoupled_weight_decay": True})


def ref_adamax(p, g, state, hp):
    t = state["step"] = state.get("step", 0) + 1
    g = _prep(p, g, hp)
    b1, b2 = hp.get("betas", (0.9, 0.999))
    m = state.get("exp_avg", np.zeros_like(p))
    m = m + (1 - b1) * (g - m)
    u = np.maximum(b2 * state.get("exp_inf", np.zeros_like(p)), np.abs(g) + hp.get("eps", 1e-8))
    state["exp_avg"], state["exp_inf"] = m, u
    p -= hp["lr"] / (1 - b1**t) * (m / u)


def ref_nadam(p, g, state, hp):
    t, g, m, v, b1, b2 = _adam_moments(p, g, state, hp)
    psi = hp.get("momentum_decay", 4e-3)
    mu = b1 * (1 - 0.5 * 0.96 ** (t * psi))
    mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
    prod = state["mu_product"] = state.get("mu_product", 1.0) * mu
    denom = np.sqrt(v / (1 - b2**t)) + hp.get("eps", 1e-8)
    p -= hp["lr"] * (1 - mu) / (1 - prod) * (g / denom)
    p -= hp["lr"] * mu_next / (1 - prod * mu_next) * (m / denom)


def ref_radam(p, g, state, hp):
    t, g, m, v, b1, b2 = _adam_moments(p, g, state, hp)
    mhat = m / (1 - b1**t)
    rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
    if rho_t > 5:
        r = np.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        adaptive = np.sqrt(1 - b2**t) / (np.sqrt(v) + hp.get("eps", 1e-8))
        p -= mhat * hp["lr"] * adaptive * r
    else:
        p -= mhat * hp["lr"]


def ref_lion(p, g, state, hp):
    g = -g if hp.get("maximize", False) else g
    b1, b2 = hp.get("betas", (0.9, 0.99))
    m = state.get("exp_avg", np.zeros_like(p))
    c = b1 * m + (1 - b1) * g
    p -= hp["lr"] * (np.sign(c) + hp.get("weight_decay", 0.0) * p)
    state["exp_avg"] = b2 * m + (1 - b2) * g


def ref_asgd(p, g, state, hp):
    t = state["step"] = state.get("step", 0) + 1
    g = _prep(p, g, hp)  # L2 from the parameter before the decay
    lr, lambd = hp.get("lr", 1e-2), hp.get("lambd", 1e-4)
    eta, mu = state.get("eta", lr), state.get("mu", 1.0)
    p *= 1 - lambd * eta
    p -= eta * g
    ax = state.get("ax", np.zeros_like(p))
    state["ax"] = p.copy() if mu == 1 else ax + (p - ax) * mu
    state["eta"] = lr / (1 + lambd * lr * t) ** hp.get("alpha", 0.75)
    state["mu"] = 1 / max(1, t - hp.get("t0", 1e6))


def ref_rprop(p, g, state, hp):
    state["step"] = state.get("step", 0) + 1
    g = -g if hp.get("maximize", False) else g
    dt = p.dtype.type
    eta_minus, eta_plus = (dt(e) for e in hp.get("etas", (0.5, 1.2)))
    lo, hi = hp.get("step_sizes", (1e-6, 50.0))
    prev = state.get("prev", np.zeros_like(p))
    size = state.get("step_size", np.full_like(p, hp.get("lr", 1e-2)))
    s = g * prev
    f = np.where(s > 0, eta_plus, np.where(s < 0, eta_minus, np.where(s == 0, dt(1), s)))
    size = np.clip(size * f.astype(p.dtype), dt(lo), dt(hi))
    g = np.where(f == eta_minus, dt(0), g).astype(p.dtype)
    p -= np.sign(g) * size
    state["prev"], state["step_size"] = g, size


def _lerp(a, b, w):
    """torch.lerp: a + w (b - a) for |w| < 0.5, else b - (b - a)(1 - w)."""
    return a + w * (b - a) if abs(w) < 0.5 else b - (b - a) * (1 - w)


def weight_average(avg, p, n_averaged, average):
    """torch.optim.swa_utils' update of the average ``avg`` by ``p`` (a new array).

    ``average`` is a fastgd.EMA or fastgd.SWA; the first averaged step copies ``p``.
    """
    if n_averaged == 0:
        return p.copy()
    if average.kind == "ema":
        return _lerp(avg, p, 1 - average.decay)
    return avg + (p - avg) / p.dtype.type(n_averaged + 1)


def ref_adafactor(p, g, state, hp):
    t = state["step"] = state.get("step", 0) + 1
    if not p.size:  # state as torch creates it; the update itself is a no-op
        if p.ndim >= 2:
            state.setdefault("row_var", np.zeros((*p.shape[:-1], 1), p.dtype))
            state.setdefault("col_var", np.zeros((*p.shape[:-2], 1, p.shape[-1]), p.dtype))
        else:
            state.setdefault("variance", np.zeros_like(p))
        return
    g = -g if hp.get("maximize", False) else g
    lr, (eps1, eps2) = hp.get("lr", 1e-2), hp.get("eps", (None, 1e-3))
    eps1 = np.finfo(p.dtype).eps if eps1 is None else eps1
    w = t ** hp.get("beta2_decay", -0.8)
    rho = min(lr, 1 / t**0.5)
    alpha = max(eps2, np.sqrt(np.sum(p.astype(np.float64) ** 2)) / p.size**0.5) * rho
    p *= 1 - lr * hp.get("weight_decay", 0.0)
    if p.ndim >= 2:
        r = state.get("row_var", np.zeros((*p.shape[:-1], 1), p.dtype))
        c = state.get("col_var", np.zeros((*p.shape[:-2], 1, p.shape[-1]), p.dtype))
        r = _lerp(r, np.mean(g * g, axis=-1, keepdims=True), w)
        c = _lerp(c, np.mean(g * g, axis=-2, keepdims=True), w)
        state["row_var"], state["col_var"] = r, c
        v = (r @ c) / np.maximum(np.mean(r, axis=-2, keepdims=True), eps1)
    else:
        v = state["variance"] = _lerp(state.get("variance", np.zeros_like(p)), g * g, w)
    u = g / np.sqrt(np.maximum(v, eps1 * eps1))
    denom = max(1.0, np.sqrt(np.sum(u.astype(np.float64) ** 2)) / (u.size**0.5
                                                                   * hp.get("d", 1.0)))
    p -= (alpha / denom) * u


def ref_muon(p, g, state, hp):
    """torch.optim.Muon's algorithm, in the parameter's dtype (torch: bfloat16)."""
    state["step"] = state.get("step", 0) + 1
    g = -g if hp.get("maximize", False) else g
    mu = hp.get("momentum", 0.95)
    buf = state["momentum_buffer"] = _lerp(state.get("momentum_buffer", np.zeros_like(p)),
                                           g, 1 - mu)
    upd = _lerp(g, buf, mu) if hp.get("nesterov", True) else buf
    a, b, c = hp.get("ns_coefficients", (3.4445, -4.7750, 2.0315))
    x = upd.T if upd.shape[0] > upd.shape[1] else upd
    x = x / max(np.sqrt(np.sum(x.astype(np.float64) ** 2)), hp.get("eps", 1e-7))
    for _ in range(hp.get("ns_steps", 5)):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    x = x.T if upd.shape[0] > upd.shape[1] else x
    rows, cols = p.shape
    lr = hp.get("lr", 1e-3)
    fn = hp.get("adjust_lr_fn")
    adj = lr * (max(1, rows / cols) ** 0.5 if fn in (None, "original") else
                0.2 * max(rows, cols) ** 0.5)
    p *= 1 - lr * hp.get("weight_decay", 0.1)
    p -= adj * x


def ref_sparse_adam(p, g, state, hp):
    """``g`` is a fastgd.SparseGrad; only its rows (repeats summed) are touched."""
    t = state["step"] = state.get("step", 0) + 1
    rows = np.unique(g.indices)
    dense = np.zeros_like(p)
    np.add.at(dense, g.indices, g.values)
    vals = -dense[rows] if hp.get("maximize", False) else dense[rows]
    b1, b2 = hp.get("betas", (0.9, 0.999))
    m = state.setdefault("exp_avg", np.zeros_like(p))
    v = state.setdefault("exp_avg_sq", np.zeros_like(p))
    if not rows.size:
        return
    m[rows] = m[rows] + (vals - m[rows]) * (1 - b1)
    v[rows] = v[rows] + (vals * vals - v[rows]) * (1 - b2)
    step_size = hp.get("lr", 1e-3) * np.sqrt(1 - b2**t) / (1 - b1**t)
    p[rows] -= step_size * (m[rows] / (np.sqrt(v[rows]) + hp.get("eps", 1e-8)))


class ReferenceOptimizer:
    """Per-parameter naive stepping with torch's conventions (None grad: untouched)."""

    def __init__(self, rule, params, **hp):
        self.rule, self.params, self.hp = rule, params, hp
        self.state = [{} for _ in params]

    def step(self, grads):
        for p, g, s in zip(self.params, grads, self.state):
            if g is not None:
                self.rule(p, g, s, self.hp)
