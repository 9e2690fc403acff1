"""Operand B of int8 BATCH_MATMULs made symmetric so that XNNPACK runs the attention matmuls."""

import numpy as np
import pytest
from ai_edge_litert import interpreter as litert

from helpers import SEQ_LEN, random_windows, tiny_gpt2_causal_lm, tiny_llama_causal_lm

# Ops that copy int8 values: their int8 inputs and outputs must agree.
_TIED = {
    "RESHAPE",
    "TRANSPOSE",
    "SQUEEZE",
    "EXPAND_DIMS",
    "TILE",
    "GATHER",
    "SLICE",
    "STRIDED_SLICE",
    "SPLIT",
    "SPLIT_V",
    "PACK",
    "UNPACK",
    "CONCATENATION",
    "BROADCAST_TO",
}
# Measured on these tiny models (4 windows): the largest logit change from
# the rewrite was 0.026 (GPT-2) and 0.011 (Llama), with XNNPACK or LiteRT's
# own kernels alike. That is the size of the int8-vs-fp32 error (0.027,
# 0.019) and of switching the unchanged model from XNNPACK to LiteRT's
# kernels (0.022, 0.011); logits reach about 0.5.
_MAX_LOGIT_CHANGE = {"gpt2": 0.05, "llama": 0.025}


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def int8_lm(request):
    """(family, int8 model bytes, windows) for a tiny GPT-2 and a tiny Llama, converted once per module."""
    import converter

    # The Llama's K/V go through TILE (grouped-query attention) on their way to the BMM.
    model = tiny_gpt2_causal_lm() if request.param == "gpt2" else tiny_llama_causal_lm()
    windows = random_windows(seq_len=SEQ_LEN)
    result = converter.convert_keras(
        model, "int8", calibration=windows, seq_len=SEQ_LEN, progress=False, symmetric_matmul=False
    )
    return request.param, result.model, windows


def test_int8_conversion_makes_the_operands_symmetric_by_default():
    import converter

    result = converter.convert_keras(
        tiny_gpt2_causal_lm(), "int8", calibration=random_windows(seq_len=SEQ_LEN), seq_len=SEQ_LEN, progress=False
    )
    assert any(c.startswith("attention BATCH_MATMUL operand B made symmetric") for c in result.graph_changes)
    assert result.recipe["symmetric_matmul"] is True
    assert _int8_matmuls(_model(result.model)) and all(zp == 0 for zp in _int8_matmuls(_model(result.model)).values())


def _model(content: bytes):
    from converter.tflite_file import inspection

    return inspection.load_model_object(content)


def _params(model, tensor: int):
    q = model.subgraphs[0].tensors[tensor].quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    return [float(s) for s in q.scale], [int(z) for z in q.zeroPoint]


def _ops(model, *kinds):
    from converter.tflite_file import inspection

    return [
        (i, inspection.op_type_name(model, op.opcodeIndex), op)
        for i, op in enumerate(model.subgraphs[0].operators)
        if not kinds or inspection.op_type_name(model, op.opcodeIndex) in kinds
    ]


def _int8_type() -> int:
    from converter.tflite_file import inspection

    return inspection.schema().TensorType.INT8


def _int8_matmuls(model) -> dict[int, int]:
    """Op index -> zero point of input 1, for every BATCH_MATMUL whose input 1 is int8."""
    int8 = _int8_type()
    return {
        i: _params(model, op.inputs[1])[1][0]
        for i, _, op in _ops(model, "BATCH_MATMUL")
        if model.subgraphs[0].tensors[op.inputs[1]].type == int8
    }


def _delegated_matmuls(content: bytes, tmp_path, name: str) -> dict[int, bool]:
    """Whether XNNPACK takes each BATCH_MATMUL, from its one-op model's execution plan (no timing involved)."""
    from benchmarks import op_profile

    path = tmp_path / f"{name}.tflite"
    path.write_bytes(content)
    timings = op_profile.profile_ops(path, runs=1, warmup_runs=0, progress=False)
    return {t.index: t.delegated for t in timings if t.op == "BATCH_MATMUL"}


def _logits(content: bytes, token_ids: np.ndarray, *, xnnpack: bool = True) -> np.ndarray:
    builtin_only = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    kwargs = {} if xnnpack else {"experimental_op_resolver_type": builtin_only}
    runner = litert.Interpreter(model_content=content, **kwargs).get_signature_runner()
    return np.concatenate([runner(token_ids=token_ids[k : k + 1])["logits"] for k in range(len(token_ids))])


def test_matmul_operand_b_gets_zero_point_0_and_xnnpack_runs_every_int8_matmul(int8_lm, tmp_path):
    from converter.passes import symmetric_operands

    family, before, windows = int8_lm
    result = symmetric_operands.symmetric_matmul_operands(before)
    after = result.model
    old, new = _model(before), _model(after)

    asymmetric = {i for i, zp in _int8_matmuls(old).items() if zp != 0}
    assert asymmetric, f"the tiny {family} has no asymmetric int8 BMM operand to fix"
    assert len(result.changes) == 1, result.changes
    assert result.changes[0].startswith("attention BATCH_MATMUL operand B made symmetric (zero point 0)")
    assert f": {len(asymmetric)} BMMs," in result.changes[0]

    # Every int8 BMM now has a symmetric, per-tensor operand B.
    assert set(_int8_matmuls(new)) == set(_int8_matmuls(old))
    assert all(zp == 0 for zp in _int8_matmuls(new).values())
    # Only re-parametrised tensors changed, each to the symmetric scale of its old range.
    changed = 0
    for tensor in range(len(old.subgraphs[0].tensors)):
        if _params(old, tensor) == _params(new, tensor):
            continue
        (scale,), (zero_point,) = _params(old, tensor)
        expected = symmetric_operands.symmetric_scale(scale, zero_point)
        assert _params(new, tensor) == ([pytest.approx(expected, rel=1e-6)], [0])
        changed += 1
    assert changed >= 3 * len(asymmetric)  # B plus at least its RESHAPE and TRANSPOSE inputs
    # Ops that copy int8 values still see one scale and zero point on all their int8 operands.
    for index, kind, op in _ops(new, *_TIED):
        operands = [t for t in [*op.inputs, *op.outputs] if t >= 0 and new.subgraphs[0].tensors[t].type == _int8_type()]
        assert len({repr(_params(new, t)) for t in operands}) <= 1, (index, kind, [_params(new, t) for t in operands])

    # XNNPACK refused exactly the asymmetric ones before, and takes them all now.
    delegated_before = _delegated_matmuls(before, tmp_path, "before")
    delegated_after = _delegated_matmuls(after, tmp_path, "after")
    assert {i for i in _int8_matmuls(old) if not delegated_before[i]} == asymmetric
    assert all(delegated_after[i] for i in _int8_matmuls(new))

    # The coarser K/V scales barely move the logits, with XNNPACK or LiteRT's own kernels.
    token_ids = windows.token_ids[:4]
    logits_before, logits_after = _logits(before, token_ids), _logits(after, token_ids)
    assert np.abs(logits_after - logits_before).max() <= _MAX_LOGIT_CHANGE[family]
    logits_builtin = _logits(after, token_ids, xnnpack=False)
    assert np.abs(logits_builtin - logits_before).max() <= _MAX_LOGIT_CHANGE[family]

    # A second pass finds nothing left to do.
    again = symmetric_operands.symmetric_matmul_operands(after)
    assert again.changes == () and again.model == after


def test_float_and_dynamic_models_are_left_unchanged(converted_tiny_lm):
    from converter.passes import symmetric_operands

    for mode in ("fp32", "dynamic"):
        content = converted_tiny_lm[mode].read_bytes()
        result = symmetric_operands.symmetric_matmul_operands(content)
        assert result.model == content and result.changes == (), mode


def _single_matmul_model(*, b_is_graph_input: bool) -> bytes:
    """int8 A[1,2,3] x B[1,3,4] -> [1,2,4], B with zero point 5, fed by a RESHAPE or directly a graph input."""
    from converter.tflite_file import inspection, writing

    schema = inspection.schema()
    model = schema.ModelT()
    model.version = 3
    model.buffers = [schema.BufferT(), schema.BufferT()]
    model.buffers[1].data = np.array([1, 3, 4], np.int32).view(np.uint8).tolist()

    def tensor(name, shape, tensor_type=schema.TensorType.INT8, scale=None, zero_point=0, buffer=0):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name, shape, tensor_type, buffer
        if scale is not None:
            t.quantization = schema.QuantizationParametersT()
            t.quantization.scale, t.quantization.zeroPoint = [scale], [zero_point]
        return t

    codes = []
    for builtin in (schema.BuiltinOperator.BATCH_MATMUL, schema.BuiltinOperator.RESHAPE):
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = builtin
        code.version = 1
        codes.append(code)
    model.operatorCodes = codes
    graph = schema.SubGraphT()
    graph.tensors = [
        tensor("a", [1, 2, 3], scale=0.1, zero_point=-3),
        tensor("b_raw", [3, 4], scale=0.05, zero_point=5),
        tensor("shape", [3], schema.TensorType.INT32, buffer=1),
        tensor("b", [1, 3, 4], scale=0.05, zero_point=5),
        tensor("out", [1, 2, 4], scale=0.2, zero_point=1),
    ]
    matmul = schema.OperatorT()
    matmul.opcodeIndex, matmul.outputs = 0, [4]
    matmul.builtinOptionsType = schema.BuiltinOptions.BatchMatMulOptions
    matmul.builtinOptions = schema.BatchMatMulOptionsT()
    if b_is_graph_input:
        graph.tensors[3].shape = [1, 3, 4]
        matmul.inputs = [0, 3]
        graph.operators, graph.inputs = [matmul], [0, 3]
    else:
        reshape = schema.OperatorT()
        reshape.opcodeIndex, reshape.inputs, reshape.outputs = 1, [1, 2], [3]
        matmul.inputs = [0, 3]
        graph.operators, graph.inputs = [reshape, matmul], [0, 1]
    graph.outputs = [4]
    model.subgraphs = [graph]
    return writing.pack(model)


@pytest.mark.parametrize("b_is_graph_input", [True, False])
def test_a_graph_input_keeps_its_parameters_and_the_reason_is_reported(b_is_graph_input):
    from converter.passes import symmetric_operands

    # B is the graph input itself, or tied to it through a RESHAPE: either way
    # the caller quantizes with these parameters, so they must stay.
    content = _single_matmul_model(b_is_graph_input=b_is_graph_input)
    result = symmetric_operands.symmetric_matmul_operands(content)
    assert result.model == content
    assert result.changes == ("1 BATCH_MATMUL operand B left asymmetric (XNNPACK will not run them): 1 x graph input",)


def test_the_symmetric_scale_covers_the_old_range():
    from converter.passes import symmetric_operands

    assert symmetric_operands.symmetric_scale(0.05, 5) == pytest.approx(0.05 * 133 / 127)
    assert symmetric_operands.symmetric_scale(0.05, -20) == pytest.approx(0.05 * 147 / 127)
    assert symmetric_operands.symmetric_scale(0.05, 0) == pytest.approx(0.05 * 128 / 127)
