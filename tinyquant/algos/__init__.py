"""How the codes are chosen: calibration and the post-training quantization algorithms.

``calibrate``    per-Linear input statistics (mean/max |x|, H = 2XᵀX/N); sequential mode
``rtn``          round-to-nearest over the core's formats and granularities
``gptq``         GPTQ (Frantar et al. 2022): error feedback through the inverse Hessian
``gptq_reference`` the paper's Algorithm 1, literally (the oracle of ``gptq``)
``fold``         folding per-channel scales into the previous op (AWQ, SmoothQuant)
``awq``          AWQ (Lin et al. 2023): activation-aware per-channel scales + clip search
``smoothquant``  SmoothQuant (Xiao et al. 2022): migrate activation outliers into weights
``rotate``       randomized Hadamard incoherence (QuIP#, QuaRot)
``qgrid``        the row-wise GPTQ/AWQ integer grid the algorithms quantize onto
"""

from .awq import (
    ALPHAS,
    apply_clip,
    awq_block,
    awq_fake_quantize,
    awq_model,
    awq_quantize_tensor,
    fold_scales,
    search_clip,
    search_scale,
)
from .calibrate import (
    BlockCalib,
    LinearStats,
    StatsRecorder,
    calibrate_sequential,
    collect_stats,
)
from .gptq import GPTQResult, gptq_quantize, layer_objective, to_qtensor
from .gptq_reference import gptq_reference
from .qgrid import fake_quantize_rows, minmax_qparams, mse_qparams, quantize_rows
from .rotate import (
    RandomHadamard,
    hadamard_matrix,
    hadamard_transform,
    rotate_hessian,
    rotate_weight,
)
from .rtn import rtn_quantize
from .smoothquant import (
    apply_smoothing,
    search_alpha,
    smooth_model,
    smooth_scales,
    static_act_scale,
)

__all__ = [
    "ALPHAS",
    "BlockCalib",
    "GPTQResult",
    "LinearStats",
    "RandomHadamard",
    "StatsRecorder",
    "apply_clip",
    "apply_smoothing",
    "awq_block",
    "awq_fake_quantize",
    "awq_model",
    "awq_quantize_tensor",
    "calibrate_sequential",
    "collect_stats",
    "fake_quantize_rows",
    "fold_scales",
    "gptq_quantize",
    "gptq_reference",
    "hadamard_matrix",
    "hadamard_transform",
    "layer_objective",
    "minmax_qparams",
    "mse_qparams",
    "quantize_rows",
    "rotate_hessian",
    "rotate_weight",
    "rtn_quantize",
    "search_alpha",
    "search_clip",
    "search_scale",
    "smooth_model",
    "smooth_scales",
    "static_act_scale",
    "to_qtensor",
]
