"""Hand-written backward pass of the tiny transformer, and AdamW.

Each layer is a pair: ``<layer>_fwd(...) -> (out, cache)`` and ``<layer>_bwd(dout, cache) ->
grads``. The forward halves reuse the model's primitives (RoPE tables, ``apply_rope``,
``softmax``, the causal mask) and keep what the backward needs; q|k|v and gate|up each run as one
fused matmul. The trained function is the served one: a test checks that this loss equals the
loss of ``tinyquant.llm.model.forward`` to 1e-12 in float64. Formulas (dy the incoming gradient):

    Linear       y = x Wᵀ                  dx = dy W,  dW = dyᵀ x
    RMSNorm      y = x r w, r = (mean x² + ε)^(-½)
                 dx = r (dx̂ − x r² mean(dx̂ ⊙ x)),  dx̂ = dy ⊙ w,  dw = Σ dy ⊙ x r
    RoPE         y = R x (a rotation)      dx = Rᵀ dy
    Attention    P = softmax(q kᵀ/√hd + M), o = P v
                 dv = Pᵀ do, dP = do vᵀ, dS = P ⊙ (dP − rowsum(dP ⊙ P)), dq = dS k/√hd,
                 dk = dSᵀ q/√hd
    SwiGLU       h = silu(g) ⊙ u           dg = dh ⊙ u ⊙ σ(g)(1 + g(1 − σ(g))),  du = dh ⊙ silu(g)
    Cross-entropy L = −mean log softmax(z)[y]   dz = (softmax(z) − onehot(y)) / N
    Distillation L = mean KL(p_t ‖ softmax(z))  dz = (softmax(z) − p_t) / N   (Hinton et al. 2015)
    Embedding    x = E[t]                  dE[t] += dx

AdamW: Loshchilov & Hutter 2019, Alg. 2 (decoupled weight decay), no decay on norms and the
embedding. Shape legend: B batch, T tokens, N = B·T, d model width, H heads, hd head dim,
F d_ff, V vocab.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tinyquant.llm.model import (
    Config,
    apply_rope,
    causal_mask,
    rope_tables,
    softmax,
)

# ----------------------------------------------------------------------------- layers


def linear_fwd(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, tuple]:
    """y = x Wᵀ for x (N, in), W (out, in).

    >>> y, _ = linear_fwd(np.ones((1, 2)), np.eye(2))
    >>> y
    array([[1., 1.]])
    """
    return x @ w.T, (x, w)


def linear_bwd(dy: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(dx, dW) for y = x Wᵀ.

    >>> dx, dw = linear_bwd(np.ones((1, 2)), (np.ones((1, 2)), np.eye(2)))
    >>> dw
    array([[1., 1.],
           [1., 1.]])
    """
    x, w = cache
    return dy @ w, dy.T @ x  # (N, in), (out, in)


def rmsnorm_fwd(x: np.ndarray, w: np.ndarray, eps: float) -> tuple[np.ndarray, tuple]:
    """RMSNorm over the last axis of x (N, d).

    >>> y, _ = rmsnorm_fwd(np.array([[3.0, 4.0]]), np.ones(2), 0.0)
    >>> y.round(4)
    array([[0.8485, 1.1314]])
    """
    r = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)  # (N, 1)
    return x * r * w, (x, w, r)


def rmsnorm_bwd(dy: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(dx, dw) of RMSNorm.

    >>> dx, dw = rmsnorm_bwd(np.ones((1, 2)), rmsnorm_fwd(np.ones((1, 2)), np.ones(2), 0.0)[1])
    >>> dx
    array([[0., 0.]])
    """
    x, w, r = cache
    dxhat = dy * w  # (N, d)
    dx = r * (dxhat - x * (r * r) * np.mean(dxhat * x, axis=-1, keepdims=True))
    dw = np.sum(dy * x * r, axis=tuple(range(dy.ndim - 1)))  # (d,)
    return dx, dw


def rope_bwd(dy: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Gradient through ``apply_rope``: the inverse rotation (angle −θ).

    >>> c, s = rope_tables(np.arange(2), 2, 10000.0, np.float64)
    >>> x = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> np.allclose(rope_bwd(apply_rope(x, c, s), c, s), x)
    True
    """
    return apply_rope(dy, cos, -sin)


def attention_fwd(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Causal attention core on (B, H, T, hd) arrays -> (B, H, T, hd).

    >>> q = np.zeros((1, 1, 2, 2)); v = np.array([[[[1.0, 0.0], [3.0, 0.0]]]])
    >>> attention_fwd(q, q, v)[0][0, 0, :, 0]
    array([1., 2.])
    """
    T, hd = q.shape[-2], q.shape[-1]
    scale = 1.0 / float(np.sqrt(hd))  # a Python float keeps float32 arrays float32
    scores = (q @ k.transpose(0, 1, 3, 2)) * scale  # (B, H, T, T)
    scores = np.where(causal_mask(T, T), scores, -np.inf)
    P = softmax(scores).astype(q.dtype)  # (B, H, T, T)
    return P @ v, (q, k, v, P, scale)


def attention_bwd(do: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dq, dk, dv) of the causal attention core.

    >>> q = np.zeros((1, 1, 2, 2)); _, c = attention_fwd(q, q, q)
    >>> [g.shape for g in attention_bwd(np.ones((1, 1, 2, 2)), c)]
    [(1, 1, 2, 2), (1, 1, 2, 2), (1, 1, 2, 2)]
    """
    q, k, v, P, scale = cache
    dv = P.transpose(0, 1, 3, 2) @ do  # (B, H, T, hd)
    dP = do @ v.transpose(0, 1, 3, 2)  # (B, H, T, T)
    dS = P * (dP - np.sum(dP * P, axis=-1, keepdims=True))  # softmax backward
    dq = (dS @ k) * scale
    dk = (dS.transpose(0, 1, 3, 2) @ q) * scale
    return dq, dk, dv


def swiglu_fwd(g: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, tuple]:
    """h = silu(g) ⊙ u.

    >>> swiglu_fwd(np.zeros(2), np.ones(2))[0]
    array([0., 0.])
    """
    sig = 1.0 / (1.0 + np.exp(-g))
    sg = g * sig
    return sg * u, (g, u, sig, sg)


def swiglu_bwd(dh: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(dg, du) of silu(g) ⊙ u.

    >>> swiglu_bwd(np.ones(1), swiglu_fwd(np.zeros(1), np.ones(1))[1])
    (array([0.5]), array([0.]))
    """
    g, u, sig, sg = cache
    return dh * u * sig * (1.0 + g * (1.0 - sig)), dh * sg


def cross_entropy_fwd(logits: np.ndarray, targets: np.ndarray) -> tuple[float, tuple]:
    """Mean −log softmax(logits)[target] over N rows; logits (N, V), targets (N,).

    >>> loss, _ = cross_entropy_fwd(np.zeros((2, 4)), np.array([0, 3]))
    >>> round(loss, 4), round(float(np.log(4)), 4)
    (1.3863, 1.3863)
    """
    z = logits - np.max(logits, axis=-1, keepdims=True)
    logp = z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))  # (N, V)
    N = len(targets)
    loss = -float(np.mean(logp[np.arange(N), targets], dtype=np.float64))
    return loss, (logp, targets)


def cross_entropy_bwd(cache: tuple) -> np.ndarray:
    """dL/dlogits = (softmax − onehot) / N.

    >>> cross_entropy_bwd(cross_entropy_fwd(np.zeros((1, 2)), np.array([0]))[1])
    array([[-0.5,  0.5]])
    """
    logp, targets = cache
    N = len(targets)
    dz = np.exp(logp)
    dz[np.arange(N), targets] -= 1.0
    return dz / N


def distill_fwd(logits: np.ndarray, teacher_logp: np.ndarray) -> tuple[float, tuple]:
    """Mean KL(p_teacher ‖ p_student) over N rows, from logits (N, V) and the teacher's
    log-probabilities (N, V) (LLM-QAT's loss: Liu et al. 2023, eq. 2, temperature 1).

    >>> t = np.log(np.full((1, 4), 0.25))
    >>> distill_fwd(np.zeros((1, 4)), t)[0]
    0.0
    """
    z = logits - np.max(logits, axis=-1, keepdims=True)
    logp = z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))  # (N, V)
    pt = np.exp(teacher_logp)
    kl = np.sum(pt * (teacher_logp - logp), axis=-1, dtype=np.float64)  # (N,)
    return float(max(np.mean(kl), 0.0)), (logp, pt)


def distill_bwd(cache: tuple) -> np.ndarray:
    """dL/dlogits = (softmax − p_teacher) / N: soft targets in place of the one-hot.

    >>> t = np.log(np.array([[0.75, 0.25]]))
    >>> distill_bwd(distill_fwd(np.zeros((1, 2)), t)[1])
    array([[-0.25,  0.25]])
    """
    logp, pt = cache
    return (np.exp(logp) - pt) / len(logp)


# ----------------------------------------------------------------------------- the model


def _block_fwd(params: dict, cfg: Config, i: int, x: np.ndarray, cos, sin):
    B, T, d = x.shape
    H, hd = cfg.n_heads, cfg.head_dim
    p = f"blk.{i}."
    c: dict = {}
    xf = x.reshape(B * T, d)  # (N, d)
    h, c["attn_norm"] = rmsnorm_fwd(xf, params[p + "attn_norm.weight"], cfg.norm_eps)
    # q, k, v in one matmul: W_qkv (3d, d)
    wqkv = np.concatenate(
        [params[p + n] for n in ("attn_q.weight", "attn_k.weight", "attn_v.weight")]
    )
    qkv, c["qkv"] = linear_fwd(h, wqkv)  # (N, 3d)
    qkv = qkv.reshape(B, T, 3, H, hd).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
    q, k = apply_rope(qkv[0], cos, sin), apply_rope(qkv[1], cos, sin)
    o, c["attn"] = attention_fwd(q, k, qkv[2])  # (B, H, T, hd)
    o = o.transpose(0, 2, 1, 3).reshape(B * T, d)  # (N, d)
    a, c["attn_output"] = linear_fwd(o, params[p + "attn_output.weight"])
    xf = xf + a
    h, c["ffn_norm"] = rmsnorm_fwd(xf, params[p + "ffn_norm.weight"], cfg.norm_eps)
    wgu = np.concatenate([params[p + "ffn_gate.weight"], params[p + "ffn_up.weight"]])
    gu, c["gate_up"] = linear_fwd(h, wgu)  # (N, 2F)
    hh, c["swiglu"] = swiglu_fwd(gu[:, : cfg.d_ff], gu[:, cfg.d_ff :])
    m, c["ffn_down"] = linear_fwd(hh, params[p + "ffn_down.weight"])
    xf = xf + m
    return xf.reshape(B, T, d), c


def _block_bwd(dx: np.ndarray, c: dict, cfg: Config, i: int, cos, sin, grads: dict) -> np.ndarray:
    B, T, d = dx.shape
    H, hd = cfg.n_heads, cfg.head_dim
    p = f"blk.{i}."
    dxf = dx.reshape(B * T, d)
    dhh, grads[p + "ffn_down.weight"] = linear_bwd(dxf, c["ffn_down"])
    dg, du = swiglu_bwd(dhh, c["swiglu"])
    dh, dwgu = linear_bwd(np.concatenate([dg, du], axis=1), c["gate_up"])
    grads[p + "ffn_gate.weight"], grads[p + "ffn_up.weight"] = dwgu[: cfg.d_ff], dwgu[cfg.d_ff :]
    dh, grads[p + "ffn_norm.weight"] = rmsnorm_bwd(dh, c["ffn_norm"])
    dxf = dxf + dh
    do, grads[p + "attn_output.weight"] = linear_bwd(dxf, c["attn_output"])
    do = do.reshape(B, T, H, hd).transpose(0, 2, 1, 3)  # (B, H, T, hd)
    dq, dk, dv = attention_bwd(do, c["attn"])
    dq, dk = rope_bwd(dq, cos, sin), rope_bwd(dk, cos, sin)
    dqkv = np.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(B * T, 3 * d)  # (N, 3d)
    dh, dwqkv = linear_bwd(dqkv, c["qkv"])
    for j, n in enumerate(("attn_q.weight", "attn_k.weight", "attn_v.weight")):
        grads[p + n] = dwqkv[j * d : (j + 1) * d]
    dh, grads[p + "attn_norm.weight"] = rmsnorm_bwd(dh, c["attn_norm"])
    return (dxf + dh).reshape(B, T, d)


def loss_and_grads(
    params: dict[str, np.ndarray],
    cfg: Config,
    x: np.ndarray,
    y: np.ndarray,
    teacher_logp: np.ndarray | None = None,
) -> tuple[float, dict[str, np.ndarray]]:
    """Mean cross-entropy (nats/byte) of predicting y (B, T) from x (B, T), and its gradient
    with respect to every parameter. With ``teacher_logp`` (B·T, V) the loss is instead the
    distillation KL to the teacher's next-byte distribution (``distill_fwd``).

    >>> from tinyquant.llm.model import init_params
    >>> cfg = Config.tiny(); p = init_params(cfg)
    >>> loss, g = loss_and_grads(p, cfg, np.zeros((1, 4), int), np.ones((1, 4), int))
    >>> bool(abs(loss - np.log(256)) < 0.5), sorted(g) == sorted(p)
    (True, True)
    """
    if cfg.n_kv_heads != cfg.n_heads:
        raise ValueError(f"the training backward has no grouped-query attention (n_kv_heads "
                         f"{cfg.n_kv_heads} != n_heads {cfg.n_heads}); train with n_kv_heads = "
                         "n_heads")  # fmt: skip
    B, T = x.shape
    dtype = params["token_embd.weight"].dtype
    cos, sin = rope_tables(np.arange(T), cfg.head_dim, cfg.rope_theta, dtype)
    # 1) forward, keeping each layer's cache
    h = params["token_embd.weight"][x]  # (B, T, d)
    caches = []
    for i in range(cfg.n_layers):
        h, c = _block_fwd(params, cfg, i, h, cos, sin)
        caches.append(c)
    hn, c_norm = rmsnorm_fwd(h.reshape(B * T, -1), params["output_norm.weight"], cfg.norm_eps)
    logits, c_out = linear_fwd(hn, params["output.weight"])  # (N, V)
    if teacher_logp is None:
        loss, c_ce = cross_entropy_fwd(logits, y.reshape(-1))
    else:
        loss, c_kd = distill_fwd(logits, teacher_logp.reshape(B * T, -1))
    # 2) backward, in reverse
    grads: dict[str, np.ndarray] = {}
    dlogits = (cross_entropy_bwd(c_ce) if teacher_logp is None else distill_bwd(c_kd)).astype(dtype)
    dhn, grads["output.weight"] = linear_bwd(dlogits, c_out)
    dh, grads["output_norm.weight"] = rmsnorm_bwd(dhn, c_norm)
    dh = dh.reshape(B, T, -1)
    for i in reversed(range(cfg.n_layers)):
        dh = _block_bwd(dh, caches[i], cfg, i, cos, sin, grads)
    demb = np.zeros_like(params["token_embd.weight"])
    np.add.at(demb, x.reshape(-1), dh.reshape(B * T, -1))  # dE[t] += dx
    grads["token_embd.weight"] = demb
    return loss, grads


# ----------------------------------------------------------------------------- AdamW


def decays(name: str) -> bool:
    """Weight decay applies to Linear weights only (not norms, not the embedding).

    >>> decays("blk.0.attn_q.weight"), decays("blk.0.attn_norm.weight"), decays("token_embd.weight")
    (True, False, False)
    """
    return not (name.endswith("norm.weight") or name == "token_embd.weight")


@dataclass
class AdamW:
    """AdamW state (Loshchilov & Hutter 2019, Alg. 2): first/second moments per tensor."""

    beta1: float = 0.9  # decay of the first moment
    beta2: float = 0.95  # decay of the second moment (LLaMA / nanoGPT value)
    eps: float = 1e-8  # added to √v
    weight_decay: float = 0.1  # decoupled decay λ on Linear weights
    t: int = 0  # steps taken
    m: dict = field(default_factory=dict)
    v: dict = field(default_factory=dict)

    def step(self, params: dict, grads: dict, lr: float) -> None:
        """Update ``params`` in place.

        >>> p = {"w.weight": np.ones(2)}; opt = AdamW(weight_decay=0.0)
        >>> opt.step(p, {"w.weight": np.ones(2)}, lr=0.1); p["w.weight"].round(4)
        array([0.9, 0.9])
        """
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        c1, c2 = 1.0 - b1**self.t, 1.0 - b2**self.t  # bias corrections
        for name, g in grads.items():
            w = params[name]
            if name not in self.m:
                self.m[name] = np.zeros_like(w)
                self.v[name] = np.zeros_like(w)
            m, v = self.m[name], self.v[name]
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            if decays(name):
                w -= (lr * self.weight_decay) * w
            w -= (lr / c1) * m / (np.sqrt(v / c2) + self.eps)


def clip_grads(grads: dict, max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is ≤ max_norm; return the norm before.

    >>> g = {"a": np.array([3.0, 4.0])}; clip_grads(g, 1.0), g["a"].round(9).tolist()
    (5.0, [0.6, 0.8])
    """
    norm = float(np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values())))
    if norm > max_norm:
        for g in grads.values():
            g *= max_norm / norm
    return norm
