"""ONNX export run by ONNX Runtime: logits against tinyquant's forward; ORT's calibrators.

Tolerances come from the op definitions (export/onnx.py): the FP32 graph differs only in
summation order (≤ 1e-4 relative); the per-token W8A8 Linear is MatMulInteger (exact int32)
followed by the same two float32 multiplies as tinyquant, so a Linear is equal to the bit; QDQ
and MatMulNBits differ per Linear by float32 rounding of the sums (≤ 1e-5 relative here), and
on the whole model a rounding difference can move an activation code at a tie by one step.
"""

import os

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from tinyquant.export.onnx import _Graph, _linear, export_onnx  # noqa: E402
from tinyquant.llm.checkpoint import load_checkpoint  # noqa: E402
from tinyquant.llm.data import calibration_samples  # noqa: E402
from tinyquant.llm.model import forward  # noqa: E402
from tinyquant.qmodel import quantize_model  # noqa: E402
from tinyquant.quant.observers import MinMaxObserver, PercentileObserver  # noqa: E402


@pytest.fixture(scope="module")
def base():
    params, cfg, _ = load_checkpoint(None)
    return params, cfg, np.random.default_rng(0).integers(0, 256, (2, 64))


def session(path, optimize=True):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def run_export(params, cfg, tok, tmp_path, name, optimize=True):
    path = tmp_path / f"{name}.onnx"
    how = export_onnx(params, cfg, path)
    return session(path, optimize).run(None, {"tokens": tok})[0], how


def test_fp32_graph_logits_match_tinyquant_within_1e_4_relative(base, tmp_path):
    params, cfg, tok = base
    y, how = run_export(params, cfg, tok, tmp_path, "fp32")
    assert set(how.values()) == {"MatMul"}
    assert rel(y, forward(params, tok, cfg)) <= 1e-4


def one_linear(w, x, optimize=True):
    gr = _Graph()
    y, _ = _linear(gr, "x", w, "w")
    h = gr.helper
    gr.nodes.append(h.make_node("Identity", [y], ["y"]))
    g = h.make_graph(gr.nodes, "one", [h.make_tensor_value_info("x", 1, [None, x.shape[1]])],
                     [h.make_tensor_value_info("y", 1, None)], gr.inits)  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 21), h.make_opsetid("com.microsoft", 1)])
    m.ir_version = 10
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so).run(None, {"x": x})[0]


def test_per_token_w8a8_linear_equals_tinyquant_to_the_bit_and_the_model_within_1e_5(
    base, tmp_path
):
    params, cfg, tok = base
    m = quantize_model(params, cfg, "w8a8")
    x = np.random.default_rng(1).normal(size=(16, 256)).astype(np.float32) * 3
    w = m.params["blk.1.ffn_up.weight"]
    assert np.array_equal(one_linear(w, x), w.forward(x))
    y, how = run_export(m.params, cfg, tok, tmp_path, "w8a8")
    assert "MatMulInteger (per-token dynamic int8)" in how.values()
    assert rel(y, m.logits(tok)) <= 1e-5


@pytest.mark.parametrize("recipe", ["w8a8-o3", "w8a8-o2", "w8a8-o1"])
def test_qdq_int8_linear_matches_tinyquant_within_float_rounding(base, recipe):
    params, cfg, _ = base
    calib = calibration_samples(4, 128) if recipe == "w8a8-o3" else None
    m = quantize_model(params, cfg, recipe, calib)
    rng = np.random.default_rng(2)
    w = m.params["blk.0.attn_q.weight"]
    x = rng.normal(size=(16, 256)).astype(np.float32)
    ref = w.forward(x)
    for optimize in (False, True):  # literal QDQ, and ORT's fused integer kernels
        assert rel(one_linear(w, x, optimize), ref) <= 1e-5


def test_static_qdq_model_unfused_matches_and_fused_agrees_on_the_next_byte(base, tmp_path):
    params, cfg, tok = base
    m = quantize_model(params, cfg, "w8a8-o3", calibration_samples(4, 128))
    ref = m.logits(tok)
    y0, how = run_export(m.params, cfg, tok, tmp_path, "o3", optimize=False)
    assert "QDQ static per-tensor int8 A × int8 W (QDQ)" in how.values()
    assert rel(y0, ref) <= 1e-5
    y1 = session(tmp_path / "o3.onnx").run(None, {"tokens": tok})[0]
    assert np.mean(y1.argmax(-1) == ref.argmax(-1)) >= 0.98  # code flips at ties, see module


def test_matmulnbits_4bit_export_matches_tinyquant_within_1e_5_relative(base, tmp_path):
    params, cfg, tok = base
    m = quantize_model(params, cfg, "w4-rtn-g128")
    y, how = run_export(m.params, cfg, tok, tmp_path, "w4")
    assert "MatMulNBits (4-bit, block 128)" in how.values()
    assert rel(y, m.logits(tok)) <= 1e-5


def test_a_recipe_onnx_cannot_express_is_refused_with_the_reason_and_no_file(base, tmp_path):
    params, cfg, _ = base
    m = quantize_model(params, cfg, "nf4")
    with pytest.raises(ValueError, match="nf4 weights has no ONNX Runtime operator"):
        export_onnx(m.params, cfg, tmp_path / "nf4.onnx")
    assert os.listdir(tmp_path) == []


def test_an_unwritable_path_is_a_one_line_error_and_leaves_no_file(base, tmp_path):
    params, cfg, _ = base
    with pytest.raises(ValueError, match="cannot write"):
        export_onnx(params, cfg, tmp_path / "missing" / "m.onnx")
    assert os.listdir(tmp_path) == []


def ort_ranges(xs, method, tmp_path, **extra):
    from onnx import helper, save
    from onnxruntime.quantization import calibrate as C

    h = helper
    g = h.make_graph([h.make_node("Identity", ["x"], ["y"])], "c",
                     [h.make_tensor_value_info("x", 1, [None, xs[0].shape[1]])],
                     [h.make_tensor_value_info("y", 1, None)])  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 21)])
    m.ir_version = 10
    save(m, tmp_path / "c.onnx")

    class Reader(C.CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": x} for x in xs])

        def get_next(self):
            return next(self.it, None)

    cal = C.create_calibrator(tmp_path / "c.onnx", ["Identity"],
                              augmented_model_path=str(tmp_path / "a.onnx"),
                              calibrate_method=method, extra_options=extra)  # fmt: skip
    cal.collect_data(Reader())
    lo, hi = cal.compute_data()["x"].range_value
    return float(np.asarray(lo).reshape(-1)[0]), float(np.asarray(hi).reshape(-1)[0])


@pytest.fixture(scope="module")
def recorded(base):
    """The input of blk.0.ffn_down on four calibration sequences, one batch per sequence."""
    params, cfg, _ = base
    xs = []
    for seq in calibration_samples(4, 128):
        got: dict = {}
        forward(params, seq[None], cfg, record=lambda n, x, got=got: got.setdefault(n, x))
        xs.append(got["blk.0.ffn_down.weight"].astype(np.float32))
    return xs


def test_ort_minmax_calibrator_range_equals_our_minmax_observer(recorded, tmp_path):
    from onnxruntime.quantization.calibrate import CalibrationMethod

    obs = MinMaxObserver("int8", symmetric=False)
    for x in recorded:
        obs.observe(x)
    lo, hi = obs.range()
    assert ort_ranges(recorded, CalibrationMethod.MinMax, tmp_path) == (float(lo), float(hi))


def test_ort_percentile_is_a_histogram_bin_edge_within_one_bin_of_our_percentile(
    recorded, tmp_path
):
    """ORT histograms |x| in 2048 bins and returns the left edge of the bin where the CDF
    crosses p; ours interpolates the order statistics (np.percentile). So they differ by less
    than one bin width, amax/2048 (plus the interpolation between the two ranks around p·N)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod

    p = 99.9
    lo, hi = ort_ranges(recorded, CalibrationMethod.Percentile, tmp_path, percentile=p,
                        symmetric=True)  # fmt: skip
    obs = PercentileObserver("int8", symmetric=True, percentile=p)
    for x in recorded:
        obs.observe(x)
    ours = float(obs.range()[1])
    a = np.abs(np.concatenate(recorded))
    width = float(a.max()) / 2048
    assert hi == -lo and abs(hi - ours) <= width + float(
        np.ptp(np.percentile(a, [p - 1e-3, p + 1e-3]))
    )


def test_cli_exports_onnx_and_tflite_and_refuses_nf4_with_exit_2(tmp_path, capsys):
    from tinyquant.cli import main

    assert (
        main(["export", "onnx", "--recipe", "w4-rtn-g128", "--out", str(tmp_path / "m.onnx")]) == 0
    )
    assert "MatMulNBits" in capsys.readouterr().out
    out = tmp_path / "b.tflite"
    assert main(["export", "tflite", "--calib", "2", "--tokens", "8", "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    assert main(["export", "onnx", "--recipe", "nf4", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "nf4" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()


def test_a_graph_the_installed_runtime_cannot_load_is_refused_before_any_file(tmp_path):
    from onnx import helper

    from tinyquant.export.onnx import check_runtime

    h = helper
    g = h.make_graph([h.make_node("NoSuchOp", ["x"], ["y"], domain="com.microsoft")], "bad",
                     [h.make_tensor_value_info("x", 1, [1])], [h.make_tensor_value_info("y", 1, [1])])  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 21), h.make_opsetid("com.microsoft", 1)])
    m.ir_version = 10
    with pytest.raises(ValueError, match="the installed onnxruntime .* cannot run this graph"):
        check_runtime(m)
