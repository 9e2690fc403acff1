"""passes.selective: op groups found by graph pattern, choice parsing, float regions that keep the model close."""

import numpy as np
import pytest

from helpers import SEQ_LEN, random_windows, run_tflite, tiny_gpt2_causal_lm, tiny_llama_causal_lm


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def int8_model(request):
    """(family, int8 model bytes, fp32 model bytes, windows) of a 2-layer model, strict all-int8 graph."""
    import converter

    model = tiny_gpt2_causal_lm() if request.param == "gpt2" else tiny_llama_causal_lm()
    windows = random_windows(seq_len=SEQ_LEN)
    quantized = converter.convert_keras(
        model,
        "int8",
        calibration=windows,
        seq_len=SEQ_LEN,
        progress=False,
        float_residual_stream=False,
        symmetric_matmul=False,
        keep_float=(),
    )
    reference = converter.convert_keras(model, "fp32", seq_len=SEQ_LEN, progress=False)
    return request.param, quantized.model, reference.model, windows


def _kinds(model_object, ops):
    from converter.tflite_file import inspection

    operators = model_object.subgraphs[0].operators
    return sorted(inspection.op_type_name(model_object, operators[i].opcodeIndex) for i in ops)


def test_groups_find_two_layers_of_attention_and_mlp_and_one_logits_layer(int8_model):
    from converter.passes import selective
    from converter.tflite_file import inspection

    family, model, _, _ = int8_model
    model_object = inspection.load_model_object(model)
    selected = selective.select_ops(
        model_object, ["attention", "mlp_down", "mlp", "logits", "softmax", "name:transformer_layer_0"]
    )
    attention = _kinds(model_object, selected["attention"])
    # Per layer: the score and the context BATCH_MATMUL, the SOFTMAX, and the scale and mask ops between.
    assert attention.count("BATCH_MATMUL") == 4 and attention.count("SOFTMAX") == 2
    assert "FULLY_CONNECTED" not in attention
    down = _kinds(model_object, selected["mlp_down"])
    # GPT-2: GELU; Llama: sigmoid(gate), gate * sigmoid(gate), and its product with up.
    activation = ["GELU"] * 2 if family == "gpt2" else ["LOGISTIC"] * 2 + ["MUL"] * 4
    assert down == sorted(["FULLY_CONNECTED"] * 2 + activation)
    mlp = _kinds(model_object, selected["mlp"])
    assert mlp == sorted(["FULLY_CONNECTED"] * (4 if family == "gpt2" else 6) + activation)
    assert _kinds(model_object, selected["logits"]) == ["FULLY_CONNECTED"]
    assert _kinds(model_object, selected["SOFTMAX"]) == ["SOFTMAX", "SOFTMAX"]
    layer_0 = _kinds(model_object, selected["name:transformer_layer_0"])
    assert layer_0.count("BATCH_MATMUL") == 2 and layer_0.count("FULLY_CONNECTED") >= 5
    # The logits FC is not a down-projection, even though Llama's final norm multiplies two activations.
    assert not selected["logits"] & selected["mlp_down"]


@pytest.mark.parametrize("choices", [("attention",), ("mlp_down",), ("mlp",), ("logits",), ("attention", "mlp_down")])
def test_chosen_ops_run_in_float_and_the_model_gets_no_worse(int8_model, choices):
    from converter.passes import selective
    from converter.tflite_file import inspection

    _, model, reference, windows = int8_model
    result = selective.keep_in_float(model, choices)
    assert len(result.changes) == len(choices) and all("no op matched" not in c for c in result.changes)
    before, after = inspection.inspect_model(model), inspection.inspect_model(result.model)
    selected = selective.select_ops(inspection.load_model_object(model), choices)
    kept = {before.ops[i].op for ops in selected.values() for i in ops}

    def float_inputs(inspected, kind):
        """Ops of `kind` that read a float activation (SELECT's first input is its boolean condition)."""
        return sum(
            any(
                t >= 0 and inspected.tensors[t].dtype == "float32" and not inspected.tensors[t].is_constant
                for t in op.inputs
            )
            for op in inspected.ops_of_type(kind)
        )

    for kind in kept:
        assert float_inputs(after, kind) >= float_inputs(before, kind) + 1, kind
    # Weights stay int8 (dynamic-range FCs, tables dequantized when run): the file grows by the new
    # tensors' and ops' metadata and small float constants only (measured: at most 4.5 KB here).
    assert len(result.model) - len(model) <= 0.02 * len(model) + 8192
    for op in after.ops_of_type("FULLY_CONNECTED"):
        assert after.tensors[op.inputs[1]].dtype == "int8"
    errors = []
    for candidate in (model, result.model):
        errors.append(
            np.mean(
                [
                    np.abs(
                        run_tflite(candidate, {"token_ids": windows.token_ids[i : i + 1]})
                        - run_tflite(reference, {"token_ids": windows.token_ids[i : i + 1]})
                    ).mean()
                    for i in range(3)
                ]
            )
        )
    # More in float does not make the model worse: measured ratios at most 1.024 over 50 feeds and three CPU
    # kinds (not below 1 everywhere: a dynamic-range FC rounds its input per row); a float-region FC with a
    # weight scale off by 1.25 gives 1.38-5.3.
    assert errors[1] <= errors[0] * 1.25 + 1e-6, errors


def test_choices_are_parsed_and_bad_ones_refused_with_what_is_valid():
    from converter.passes import selective

    assert selective.parse_choices("attention, softmax,name:layer_1/,attention") == (
        "attention",
        "SOFTMAX",
        "name:layer_1/",
    )
    assert selective.parse_choices(None) == () and selective.parse_choices("") == ()
    with pytest.raises(ValueError, match="Use a group \\(attention, mlp_down, mlp, logits\\)"):
        selective.parse_choices("attn")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        selective.parse_choices("name:([")
    with pytest.raises(ValueError, match="give a regular expression"):
        selective.parse_choices("name:")


def test_a_choice_that_matches_nothing_says_so():
    from converter.passes import selective

    model = tiny_gpt2_causal_lm()
    import converter

    quantized = converter.convert_keras(
        model,
        "int8",
        calibration=random_windows(seq_len=SEQ_LEN),
        seq_len=SEQ_LEN,
        progress=False,
        keep_float="name:no_such_layer",
    )
    assert "kept in float (name:no_such_layer): no op matched" in quantized.graph_changes
    assert selective.keep_in_float(quantized.model, ["name:no_such_layer"]).model == quantized.model
