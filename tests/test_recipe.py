"""Recipes are lists of layer rules: the last match wins, they round-trip through JSON, and every
option that cannot be honoured is a clear error."""

import json

import pytest

from tinyquant.presets import PRESETS
from tinyquant.recipe import (
    AWQ,
    GPTQ,
    Activations,
    LLMInt8,
    Recipe,
    Rotation,
    Rule,
    Smooth,
    Weights,
)

NAMES = ["blk.0.attn_q.weight", "blk.0.attn_norm.weight", "blk.0.ffn_down.weight",
         "blk.1.ffn_down.weight", "output.weight", "token_embd.weight"]  # fmt: skip
LINEARS = {"blk.0.attn_q.weight", "blk.0.ffn_down.weight", "blk.1.ffn_down.weight",
           "output.weight"}  # fmt: skip


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_round_trips_through_json_unchanged(name):
    r = PRESETS[name]
    assert Recipe.from_json(r.to_json()) == r


def test_the_last_matching_rule_wins_and_unmatched_tensors_stay_unassigned():
    r = Recipe("mix", (Rule(("blk.*",), Weights("uint4")),
                       Rule(("blk.1.ffn_down",), Weights("uint8"))))  # fmt: skip
    got = {k: v.weights.fmt for k, v in r.assign(NAMES, LINEARS).items()}
    assert got == {"blk.0.attn_q.weight": "uint4", "blk.0.ffn_down.weight": "uint4",
                   "blk.1.ffn_down.weight": "uint8"}  # fmt: skip


def test_casts_apply_to_every_tensor_but_quantized_formats_only_to_linears():
    cast = Recipe("c", (Rule(("*",), Weights("bf16")),)).assign(NAMES, LINEARS)
    assert set(cast) == set(NAMES)
    quant = Recipe("q", (Rule(("*",), Weights("uint4")),)).assign(NAMES, LINEARS)
    assert set(quant) == LINEARS


def test_a_pattern_that_matches_no_tensor_is_an_error():
    with pytest.raises(ValueError, match="match no"):
        Recipe("x", (Rule(("blk.*.attn_vv",), Weights("uint4")),)).assign(NAMES, LINEARS)


def test_an_unknown_json_key_is_an_error_naming_the_key():
    d = json.loads(PRESETS["w4-gptq"].to_json())
    d["rules"][0]["method"]["actorder"] = True
    with pytest.raises(ValueError, match="actorder"):
        Recipe.from_dict(d)
    d = json.loads(PRESETS["w4-gptq"].to_json())
    d["rules"][0]["weights"]["groupsize"] = 128
    with pytest.raises(ValueError, match="groupsize"):
        Recipe.from_dict(d)


def test_an_unknown_method_or_format_is_an_error():
    d = json.loads(PRESETS["w4-gptq"].to_json())
    d["rules"][0]["method"]["name"] = "magic"
    with pytest.raises(ValueError, match="magic"):
        Recipe.from_dict(d)
    with pytest.raises(ValueError, match="int5"):
        Weights("int5")


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Rule(("*",), Weights("uint4", 128), GPTQ(act_order=True)), "static_groups"),
        (lambda: Rule(("*",), Weights("nf4"), GPTQ()), "integer grids"),
        (lambda: Rule(("*",), Weights("uint4", symmetric=True), AWQ()), "AWQ"),
        (lambda: Rule(("*",), Weights("uint4"), LLMInt8()), "LLMInt8"),
        (lambda: Rule(("*",), Weights("uint2"), activations=Activations()), "W8A8"),
        (lambda: Rule(("*",), Weights("uint4", 12), activations=Activations()), "W4A8"),
        (lambda: Rule(("*",), Weights("uint4"), activations=Activations("per_tensor")), "W4A8"),
        (lambda: Rule(("*",), Weights("fp16"), GPTQ()), "cast"),
        (
            lambda: Rule(
                ("*",),
                Weights("int8", symmetric=True),
                activations=Activations(),
                rotation=Rotation(),
            ),
            "rotation",
        ),
        (lambda: Activations("per_token", static=True), "static"),
        (lambda: Weights("uint4", 64, per_tensor=True), "conflict"),
        (lambda: Weights("uint4", 0), "group_size"),
        (lambda: Smooth(1.5), "alpha"),
        (lambda: GPTQ(damp=-1.0), "damp"),
        (lambda: LLMInt8(0.0), "threshold"),
    ],
)
def test_conflicting_or_impossible_options_are_one_line_errors(make, match):
    with pytest.raises(ValueError, match=match) as err:
        make()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "make",
    [lambda: GPTQ(chunk=2.5), lambda: GPTQ(damp=float("inf")), lambda: Rotation(seed=-1),
     lambda: Weights("uint4", 32.9), lambda: Weights("uint4", True), lambda: LLMInt8(float("nan")),
     lambda: Recipe("x", calib_windows=0)],
)  # fmt: skip
def test_recipe_options_are_checked_when_the_recipe_is_built_not_when_it_runs(make):
    with pytest.raises((ValueError, TypeError)):
        make()
