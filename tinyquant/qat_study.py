"""The QAT figures notebook 10 reads that are too long to repeat inside it: ``qat.json``.

    python -m tinyquant.qat_study notebooks/figures/qat.json

1) ternary PTQ: BitNet b1.58's absmean grid per row, no training — ternary QAT's PTQ baseline;
2) QLoRA: rank-8 bf16 adapters trained on the frozen NF4 (double-quantized) base, distilled from
   the FP32 logits (``tinyquant.qlora``), scored with and without the adapters;
3) the task-loss pair: an FP32 control and W2-g64 QAT fine-tuned with the same steps, data,
   schedule and loss (``tinyquant qat --recipe fp32`` / ``--recipe w2-g64 --control``), each
   scored against the shipped model, and QAT against its control (paired).

Every figure comes from the one evaluator on the README's sample. Deterministic (seeded).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from tinyquant.evaluate import Evaluator
from tinyquant.llm.checkpoint import load_checkpoint
from tinyquant.qlora import QLoRAConfig, memory_table, merged_params, train_qlora
from tinyquant.qmodel import linear_names
from tinyquant.quant.qat_ops import ternary_fwd

__all__ = ["run_qat_study", "TASK_STEPS", "QLORA"]

TASK_STEPS = 60  # steps of 16 × 256 bytes in the task-loss pair
QLORA = QLoRAConfig(rank=8, alpha=16.0, steps=80, batch_size=8, lr=1e-3, warmup=10, distill=True,
                    seed=0, eval_every=40, eval_bytes=16384)  # fmt: skip


def _task_pair(tmp: Path) -> dict:
    from tinyquant.cli import main

    lr, slr = "0.0002", "0.002"
    control = [
        "qat", "--recipe", "fp32", "--steps", str(TASK_STEPS), "--batch-size", "16", "--lr", lr,
        "--eval-every", "30", "--out", str(tmp / "fp32-control.safetensors"),
    ]  # fmt: skip
    qat = [
        "qat", "--recipe", "w2-g64", "--steps", str(TASK_STEPS), "--batch-size", "16", "--lr", lr,
        "--scale-lr", slr, "--eval-every", "30", "--control", str(tmp / "fp32-control.safetensors"),
        "--out", str(tmp / "qat-w2-g64-task.safetensors"),
    ]  # fmt: skip
    for argv in (control, qat):
        if main(argv) != 0:
            raise RuntimeError(f"tinyquant {' '.join(argv)} failed")
    c = json.loads((tmp / "fp32-control.safetensors.json").read_text())
    q = json.loads((tmp / "qat-w2-g64-task.safetensors.json").read_text())
    cmds = [" ".join(["tinyquant", *a]).replace(str(tmp) + "/", "") for a in (control, qat)]
    return {"steps": TASK_STEPS, "batch_size": 16, "lr": float(lr), "scale_lr": float(slr),
            "control_vs_fp32": c["eval_vs_fp32"], "qat_vs_fp32": q["eval_vs_fp32"],
            "qat_vs_control": q["vs_control"], "commands": cmds}  # fmt: skip


def run_qat_study(out: str | Path) -> dict:
    """Measure the three studies and write them to ``out`` (complete, or not at all)."""
    params, cfg, _ = load_checkpoint()
    ev = Evaluator(params, cfg)
    res: dict = {}
    # 1) ternary PTQ: absmean per row, float16 scales, no training
    tern = dict(params) | {n: ternary_fwd(params[n], (1, params[n].shape[1]), "float16")[0]
                           for n in linear_names(cfg)}  # fmt: skip
    res["ternary-ptq-absmean"] = ev.evaluate(tern).as_dict()
    # 2) QLoRA on the frozen NF4 base
    base, adapters, meta = train_qlora(params, cfg, QLORA)
    res["nf4"] = ev.evaluate(base).as_dict()
    res["qlora-nf4-r8"] = ev.evaluate(merged_params(params, base, adapters, cfg, QLORA)).as_dict()
    res["qlora_meta"] = meta
    res["qlora_memory"] = memory_table(base, adapters, cfg)
    # 3) the task-loss pair
    with tempfile.TemporaryDirectory() as tmp:
        res["task_pair"] = _task_pair(Path(tmp))
    out = Path(out)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(res, indent=1, default=float))
    tmp_out.replace(out)
    return res


if __name__ == "__main__":  # pragma: no cover - a command
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m tinyquant.qat_study OUT.json")
    run_qat_study(sys.argv[1])
