"""A recipe is a list of layer rules: which tensors get which scheme, by which method.

    Recipe(name, rules=[Rule(targets, weights, method, activations, rotation, smooth), …])

Each rule names its targets by patterns over the model's GGUF tensor names (``fnmatch``, with or
without the ``.weight`` suffix: ``"blk.*"``, ``"blk.*.ffn_down"``, ``"blk.[23].attn_v"``); **the
last matching rule wins** and unmatched tensors stay FP32 — as llm-compressor's config groups
and llama.cpp's ``--tensor-type ffn_down=q6_k`` overrides work. A rule holds

    weights      the scheme: format, granularity (per tensor / per row / groups of g along the
                 input axis), symmetric or not, the dtype scales are stored in
    method       how codes are chosen, with its own options: RTN() · GPTQ(act_order, …) ·
                 AWQ(clip) · LLMInt8(threshold)
    activations  optional int activations: per token or per tensor, dynamic or static (W8A8)
    rotation     optional randomized Hadamard of each Linear's input (QuIP#)
    smooth       optional SmoothQuant migration (norm → Linears) before quantizing

Casts (``fp16``, ``bf16``) apply to any tensor; quantized formats to Linear weights. Presets
(``presets.py``), mixed-precision allocations and llama.cpp-like mixes are all recipes, and
recipes round-trip through JSON (``Recipe.from_json(r.to_json()) == r``).
Refs: vLLM llm-compressor ``config_groups``; llama.cpp ``llama-quantize --tensor-type``.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import asdict, dataclass, field, fields

from tinyquant.quant import MX_FORMATS, get_format
from tinyquant.quant.checks import check_int, check_real

__all__ = [
    "AWQ",
    "GPTQ",
    "LLMInt8",
    "QAT",
    "RTN",
    "Activations",
    "Recipe",
    "Rotation",
    "Rule",
    "Smooth",
    "Weights",
    "CAST_FORMATS",
]

CAST_FORMATS = ("fp16", "bf16")  # stored as 16-bit floats, no scale
BLOCK_LINEARS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@dataclass(frozen=True)
class Weights:
    """How a weight is stored. Per output row unless ``group_size`` or ``per_tensor``.

    >>> Weights("uint4", group_size=128).granularity, Weights("int8").granularity
    ('group', 'channel')
    """

    fmt: str  # a format of the table: "uint4", "int8", "nf4", "fp8_e4m3", "fp16", ...
    group_size: int | None = None  # elements along in_features sharing one (scale, zero)
    per_tensor: bool = False  # one scale for the whole weight (SmoothQuant's O1–O3)
    symmetric: bool = False  # symmetric grid, or asymmetric min-max (GPTQ/AWQ's default)
    scale_dtype: str = "float16"  # how scales are stored ("float16" as GPTQ/AWQ/llama.cpp)
    double_quant: bool = False  # codebook formats: 8-bit absmax of the absmax (QLoRA)

    def __post_init__(self) -> None:
        if self.is_mx:  # microscaling: the format fixes the block (32, NVFP4 16) and its scale
            if self.group_size or self.per_tensor or self.symmetric or self.double_quant:
                raise ValueError(f"{self.fmt} fixes its own blocks and scales; give no options")
            return
        f = get_format(self.fmt)  # raises for an unknown format
        if self.group_size is not None:
            check_int(self.group_size, "group_size")
        if self.per_tensor and self.group_size is not None:
            raise ValueError("per_tensor and group_size conflict; choose one granularity")
        if self.scale_dtype not in ("float16", "float32"):
            raise ValueError(
                f"scale_dtype must be 'float16' or 'float32', got {self.scale_dtype!r}"
            )
        if self.double_quant and f.kind != "codebook":
            raise ValueError(
                f"double_quant applies to codebook formats (nf4, fp4_bnb), not {f.name}"
            )
        if self.is_cast and (self.group_size or self.per_tensor or self.symmetric):
            raise ValueError(f"{f.name} is a cast (no scale); it takes no granularity options")

    @property
    def is_cast(self) -> bool:
        return self.fmt in CAST_FORMATS

    @property
    def is_mx(self) -> bool:
        return self.fmt in MX_FORMATS

    @property
    def granularity(self) -> str:
        return "tensor" if self.per_tensor else "group" if self.group_size else "channel"


@dataclass(frozen=True)
class RTN:
    """Round to nearest: no calibration data, no error feedback (the baseline)."""

    name: str = field(default="rtn", init=False)


@dataclass(frozen=True)
class GPTQ:
    """GPTQ (Frantar et al. 2022): columns in order, each error pushed onto the rest via H⁻¹."""

    act_order: bool = False  # columns by decreasing diag(H)
    static_groups: bool = False  # every group's grid from the original W, before any update
    mse: bool = False  # each group's grid by the reference's shrink search instead of min-max
    damp: float = 0.01  # λ = damp · mean(diag H) added to H's diagonal
    chunk: int = 128  # columns updated lazily at once (Alg. 1's block size B)
    name: str = field(default="gptq", init=False)

    def __post_init__(self) -> None:
        check_real(self.damp, "GPTQ damp", 0.0, 1e6)
        check_int(self.chunk, "GPTQ chunk")


@dataclass(frozen=True)
class AWQ:
    """AWQ (Lin et al. 2023): activation-aware per-channel scales folded into the previous op."""

    clip: bool = True  # the per-group clip search after scaling
    name: str = field(default="awq", init=False)


@dataclass(frozen=True)
class LLMInt8:
    """LLM.int8() (Dettmers et al. 2022): int8 vector-wise, outlier input features in float."""

    threshold: float = 6.0  # input features with |x| ≥ this take the float path
    name: str = field(default="llm_int8", init=False)

    def __post_init__(self) -> None:
        if self.threshold != float("inf"):  # inf: no outliers, plain vector-wise int8
            check_real(self.threshold, "LLMInt8 threshold (the paper uses 6.0)", 0.0, open_lo=True)


@dataclass(frozen=True)
class QAT:
    """Quantization-aware training (tinyquant.qat): the grid trained with the model, then
    converted. A record of how codes were made; ``tinyquant qat`` runs it, not quantize_model."""

    steps: int = 200  # optimizer steps
    distill: bool = False  # KL to the FP32 model's logits instead of the task loss
    learn_scale: bool = True  # LSQ step sizes (and zero points) trained beside the weights
    seed: int = 0  # seeds the batch sampler
    name: str = field(default="qat", init=False)

    def __post_init__(self) -> None:
        check_int(self.steps, "QAT steps")


METHODS = {"rtn": RTN, "gptq": GPTQ, "awq": AWQ, "llm_int8": LLMInt8, "qat": QAT}  # name → class


@dataclass(frozen=True)
class Activations:
    """Integer activations in front of the Linear: x̂ = s · clamp(round(x/s)), s = amax/qmax."""

    granularity: str = "per_token"  # "per_token" (one scale per row) or "per_tensor"
    static: bool = False  # amax frozen from calibration (O3) instead of measured per batch
    fmt: str = "int8"

    def __post_init__(self) -> None:
        if self.granularity not in ("per_token", "per_tensor"):
            raise ValueError(f"activation granularity must be per_token or per_tensor, got "
                             f"{self.granularity!r}")  # fmt: skip
        if self.static and self.granularity == "per_token":
            raise ValueError("static per-token scales do not exist (tokens differ per batch); "
                             "use granularity='per_tensor' with static=True")  # fmt: skip
        if get_format(self.fmt).name != "int8":
            raise ValueError(f"activations are int8 here, got {self.fmt!r}")


@dataclass(frozen=True)
class Rotation:
    """Randomized Hadamard R = D·H/√n on each Linear's input: y = (xR)(WR)ᵀ."""

    seed: int = 0  # seeds the random signs D

    def __post_init__(self) -> None:
        check_int(self.seed, "Rotation seed", 0)


@dataclass(frozen=True)
class Smooth:
    """SmoothQuant: s_j = max|X_j|^α / max|W_j|^(1−α), x/s folded into the previous op."""

    alpha: float = 0.5
    pairs: tuple[str, ...] = ("qkv", "o", "gate_up", "down")  # where s is folded (fold.py)

    def __post_init__(self) -> None:
        check_real(self.alpha, "Smooth alpha", 0.0, 1.0)
        object.__setattr__(self, "pairs", tuple(self.pairs))
        bad = set(self.pairs) - {"qkv", "o", "gate_up", "down"}
        if bad or not self.pairs:
            raise ValueError(f"Smooth pairs must be among qkv, o, gate_up, down; got {self.pairs}")


@dataclass(frozen=True)
class Rule:
    """One layer rule: targets → scheme, method and options."""

    targets: tuple[str, ...]
    weights: Weights
    method: RTN | GPTQ | AWQ | LLMInt8 | QAT = RTN()
    activations: Activations | None = None
    rotation: Rotation | None = None
    smooth: Smooth | None = None

    def __post_init__(self) -> None:
        if isinstance(self.targets, str) or not self.targets:
            raise ValueError(f"targets must be a non-empty list of patterns, got {self.targets!r}")
        object.__setattr__(self, "targets", tuple(self.targets))
        w, m = self.weights, self.method
        if w.is_mx:
            if not isinstance(m, RTN) or self.activations or self.smooth:
                raise ValueError(f"{w.fmt} is round-to-nearest weight-only (rotation allowed)")
            return
        f = get_format(w.fmt)
        if w.is_cast and (not isinstance(m, RTN) or self.activations or self.rotation
                          or self.smooth):  # fmt: skip
            raise ValueError(f"{w.fmt} is a cast: it takes no method, activations or rotation")
        if isinstance(m, GPTQ | AWQ) and f.kind != "int":
            raise ValueError(f"{m.name} quantizes to integer grids; {w.fmt} is a {f.kind} format")
        if isinstance(m, GPTQ) and m.act_order and w.group_size and not m.static_groups:
            raise ValueError(
                "GPTQ act_order with groups needs static_groups=True (stored groups must be "
                "contiguous; the reference's g_idx would be needed at inference)"
            )
        if isinstance(m, AWQ) and (w.symmetric or w.per_tensor or self.rotation):
            raise ValueError("AWQ uses its asymmetric per-row/group grid without rotation")
        if isinstance(m, LLMInt8) and (w.fmt != "int8" or w.group_size or w.per_tensor
                                       or self.activations or self.rotation):  # fmt: skip
            raise ValueError("LLMInt8 is int8 per channel with its own activations; no options")
        a = self.activations
        if a is not None and not (f.name == "int8" and w.symmetric):  # W8A8, or else W4A8:
            w4a8 = (f.kind == "int" and f.storage_bits in (4, 3) and not w.per_tensor
                    and (w.group_size or 8) % 8 == 0
                    and a.granularity == "per_token" and a.fmt == "int8")  # fmt: skip
            if not w4a8:
                raise ValueError(
                    "integer activations pair with symmetric int8 weights (W8A8) or, as int8 "
                    "per token, with 4-/3-bit integer weights per row or in groups of a multiple "
                    f"of 8 (W4A8); got {w.fmt} group_size {w.group_size} with {a.granularity}"
                )
        if self.activations is not None and self.rotation is not None:
            raise ValueError("activations and rotation together are not supported")

    def matches(self, name: str) -> bool:
        """True if a target pattern matches ``name`` (with or without ``.weight``).

        >>> Rule(("blk.*.ffn_down",), Weights("uint4")).matches("blk.2.ffn_down.weight")
        True
        """
        short = name.removesuffix(".weight")
        return any(fnmatch.fnmatchcase(name, t) or fnmatch.fnmatchcase(short, t)
                   for t in self.targets)  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    """A named list of rules (the last match wins), and how much calibration text it uses."""

    name: str
    rules: tuple[Rule, ...] = ()
    description: str = ""  # one line for tables and --help
    calib_windows: int | None = None  # use only the first N calibration windows; None: all

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        if self.calib_windows is not None:
            check_int(self.calib_windows, "calib_windows")

    def assign(self, names: list[str], linears: set[str]) -> dict[str, Rule]:
        """Tensor name → the rule that applies (the last match; casts any tensor, the rest
        Linears only). A pattern matching no candidate tensor is an error.

        >>> r = Recipe("x", (Rule(("blk.*",), Weights("uint4")), Rule(("blk.*.ffn_down",),
        ...                  Weights("uint8"))))
        >>> a = r.assign(["blk.0.attn_q.weight", "blk.0.ffn_down.weight", "blk.0.attn_norm.weight"],
        ...              {"blk.0.attn_q.weight", "blk.0.ffn_down.weight"})
        >>> {k: v.weights.fmt for k, v in a.items()}
        {'blk.0.attn_q.weight': 'uint4', 'blk.0.ffn_down.weight': 'uint8'}
        """
        out: dict[str, Rule] = {}
        for rule in self.rules:
            cands = [n for n in names if rule.weights.is_cast or n in linears]
            hit = [n for n in cands if rule.matches(n)]
            if not hit:
                raise ValueError(
                    f"recipe {self.name}: targets {list(rule.targets)} match no "
                    f"{'tensor' if rule.weights.is_cast else 'Linear weight'}; names look like "
                    f"'blk.0.ffn_down' or 'blk.*.attn_v'"
                )
            out.update(dict.fromkeys(hit, rule))
        return {n: out[n] for n in names if n in out}

    @property
    def needs_calibration(self) -> bool:
        """True if any rule needs calibration text (GPTQ, AWQ, static activations, SmoothQuant)."""
        return any(
            isinstance(r.method, GPTQ | AWQ)
            or (r.activations is not None and r.activations.static)
            or r.smooth is not None
            for r in self.rules
        )

    # -- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        for rule, rd in zip(self.rules, d["rules"], strict=True):
            rd["targets"] = list(rule.targets)
            rd["method"] = {"name": rule.method.name} | {
                k: v for k, v in asdict(rule.method).items() if k != "name"
            }
        return d

    def to_json(self) -> str:
        """The recipe as JSON (``from_json`` reads it back)."""
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        _keys(d, cls, "recipe")
        rules = []
        for k, rd in enumerate(d.get("rules", [])):
            where = f"rules[{k}]"
            _keys(rd, Rule, where)
            md = dict(rd.get("method", {"name": "rtn"}))
            mname = md.pop("name", "rtn")
            if mname not in METHODS:
                raise ValueError(
                    f"{where}.method: unknown method {mname!r}; one of {list(METHODS)}"
                )
            opt = {"activations": Activations, "rotation": Rotation, "smooth": Smooth}
            kw = {o: _build(c, rd[o], f"{where}.{o}") for o, c in opt.items() if rd.get(o)}
            rules.append(Rule(
                targets=tuple(rd["targets"]) if isinstance(rd.get("targets"), list)
                else rd.get("targets", ()),
                weights=_build(Weights, rd.get("weights"), f"{where}.weights"),
                method=_build(METHODS[mname], md, f"{where}.method"),
                **kw,
            ))  # fmt: skip
        return cls(d["name"], tuple(rules), d.get("description", ""), d.get("calib_windows"))

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        """Read a recipe written by ``to_json`` (or by hand); unknown keys are errors."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"recipe JSON is not valid JSON: {err}") from err
        if not isinstance(d, dict) or "name" not in d:
            raise ValueError('a recipe is a JSON object with "name" and "rules"')
        return cls.from_dict(d)


def _keys(d, cls, where: str) -> None:
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(d).__name__}")
    known = {f.name for f in fields(cls) if f.init} | {"name"}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")


def _build(cls, d, where: str):
    _keys(d, cls, where)
    try:
        return cls(**{k: v for k, v in d.items() if k != "name"})
    except TypeError as err:
        raise ValueError(f"{where}: {err}") from err
