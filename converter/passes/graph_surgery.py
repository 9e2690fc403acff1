"""Small, verified rewrites of a `.tflite` flatbuffer.

The stock converter leaves two things in a token-id LM graph that break
quantization, and neither can be reached from the Keras side without
rewriting the model:

* Keras' `take` wraps negative indices (`where(ids < 0, ids + vocab, ids)`)
  before the embedding GATHER. Those int32 LESS/ADD/SELECT ops make the 16x8
  quantizer ask for a float range of the token ids and fail ("Max and min for
  dynamic tensors should be recorded during calibration"). Token ids are
  validated to lie in `[0, vocab)` before they reach the model, so the wrap is
  the identity and can go.
* The 16x8 quantizer marks some ops int16 that LiteRT has no int16 kernel for
  (SQUARED_DIFFERENCE: "only supports FLOAT32 and INT32"). Such ops are run in
  float between a DEQUANTIZE and a QUANTIZE, which keeps every other op int16.

Only `ai_edge_litert`'s schema and `flatbuffers` are needed: no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterable

from converter.passes.result import SurgeryResult
from converter.tflite_file import inspection, writing


def drop_negative_index_wrap(model: bytes) -> SurgeryResult:
    """Removes `select(x < 0, x + n, x)` on int32 tensors, rewiring users to `x`.

    Args:
      model: a float `.tflite` model.

    Returns:
      The rewritten model and one line per removed pattern.
    """
    schema = inspection.schema()
    model_object = inspection.load_model_object(model)
    changes = []
    for subgraph in model_object.subgraphs:
        producer = {}
        for index, op in enumerate(subgraph.operators):
            for tensor in op.outputs:
                producer[tensor] = index
        removed, rewire = set(), {}
        for index, op in enumerate(subgraph.operators):
            if inspection.op_type_name(model_object, op.opcodeIndex) not in ("SELECT", "SELECT_V2"):
                continue
            if len(op.inputs) != 3:
                continue
            condition, wrapped, original = op.inputs
            less_index, add_index = producer.get(condition), producer.get(wrapped)
            if less_index is None or add_index is None:
                continue
            less, add = subgraph.operators[less_index], subgraph.operators[add_index]
            if (
                inspection.op_type_name(model_object, less.opcodeIndex) != "LESS"
                or inspection.op_type_name(model_object, add.opcodeIndex) != "ADD"
                or less.inputs[0] != original
                or add.inputs[0] != original
                or subgraph.tensors[original].type != schema.TensorType.INT32
            ):
                continue
            rewire[op.outputs[0]] = original
            removed |= {index, less_index, add_index}
            changes.append(f"removed negative-index wrap on {inspection.decode_name(subgraph.tensors[original].name)}")
        if not rewire:
            continue
        for op in subgraph.operators:
            op.inputs = [rewire.get(t, t) for t in op.inputs]
        subgraph.outputs = [rewire.get(t, t) for t in subgraph.outputs]
        # The LESS/ADD results may feed nothing else; if they do, keep them.
        still_read = {t for i, op in enumerate(subgraph.operators) if i not in removed for t in op.inputs}
        removed = {i for i in removed if not any(t in still_read for t in subgraph.operators[i].outputs)}
        subgraph.operators = [op for i, op in enumerate(subgraph.operators) if i not in removed]
    if not changes:
        return SurgeryResult(model=bytes(model), changes=())
    writing.prune_operator_codes(model_object)
    return SurgeryResult(model=writing.pack(model_object), changes=tuple(changes))


def _bridge(model_object, subgraph, tensors, quantized_types, *, to_float: bool):
    """Float twins for the quantized tensors among `tensors`, and the ops converting them.

    With `to_float`, each quantized input gets a DEQUANTIZE into its twin;
    otherwise each quantized output is written as a float twin and a QUANTIZE
    restores the original tensor (same scale and zero point).

    Returns:
      (new ops, the tensor list with twins in place of quantized tensors).
    """
    schema = inspection.schema()
    ops, replaced = [], list(tensors)
    for position, tensor in enumerate(replaced):
        if tensor < 0 or subgraph.tensors[tensor].type not in quantized_types:
            continue
        twin = writing.float_twin(subgraph, tensor)
        bridge = schema.OperatorT()
        builtin = schema.BuiltinOperator.DEQUANTIZE if to_float else schema.BuiltinOperator.QUANTIZE
        version = 3 if subgraph.tensors[tensor].type == schema.TensorType.INT16 else 2
        bridge.opcodeIndex = writing.opcode_at_least(model_object, builtin, version)
        bridge.inputs, bridge.outputs = ([tensor], [twin]) if to_float else ([twin], [tensor])
        ops.append(bridge)
        replaced[position] = twin
    return ops, replaced


def run_ops_in_float(model: bytes, op_types: Iterable[str]) -> SurgeryResult:
    """Runs every op of the given types in float inside a quantized model.

    Each quantized input gets a DEQUANTIZE in front of the op and each quantized
    output a QUANTIZE after it, with the output's original scale and zero
    point, so the tensors around the op keep their types.

    Args:
      model: a quantized `.tflite` model.
      op_types: builtin op names, e.g. `["SQUARED_DIFFERENCE"]`.

    Returns:
      The rewritten model and one line per op moved to float.
    """
    schema = inspection.schema()
    wanted = set(op_types)
    model_object = inspection.load_model_object(model)
    quantized_types = {schema.TensorType.INT8, schema.TensorType.INT16, schema.TensorType.UINT8}
    changes = []
    for subgraph in model_object.subgraphs:
        rebuilt = []
        for op in subgraph.operators:
            name = inspection.op_type_name(model_object, op.opcodeIndex)
            touched = [
                t for t in list(op.inputs) + list(op.outputs) if t >= 0 and subgraph.tensors[t].type in quantized_types
            ]
            if name not in wanted or not touched:
                rebuilt.append(op)
                continue
            dequantizes, op.inputs = _bridge(model_object, subgraph, op.inputs, quantized_types, to_float=True)
            quantizes, op.outputs = _bridge(model_object, subgraph, op.outputs, quantized_types, to_float=False)
            rebuilt.extend(dequantizes)
            rebuilt.append(op)
            rebuilt.extend(quantizes)
            changes.append(f"{name} runs in float ({len(touched)} quantized tensors bridged)")
        subgraph.operators = rebuilt
    if not changes:
        return SurgeryResult(model=bytes(model), changes=())
    return SurgeryResult(model=writing.pack(model_object), changes=tuple(changes))


# Masked attention scores must carry no weight after softmax: exp(-30) is below
# float32 epsilon relative to the row's largest score.
MASK_MARGIN = 30.0
# A select constant at or below this is a "minus infinity" mask fill.
_MASK_FILL_THRESHOLD = -1e4


def _constant_values(model_object, subgraph, tensor_index: int):
    import numpy as np  # pylint: disable=import-outside-toplevel

    schema = inspection.schema()
    tensor = subgraph.tensors[tensor_index]
    if tensor.type != schema.TensorType.FLOAT32 or tensor.buffer <= 0:
        return None
    data = model_object.buffers[tensor.buffer].data
    if data is None or len(data) == 0:
        return None
    return np.frombuffer(bytes(data), dtype=np.float32)


def _mask_selects(model_object, subgraph):
    """Yields (op, score input position, constant position) for masks before SOFTMAX."""
    readers = {}
    for op in subgraph.operators:
        for tensor in op.inputs:
            readers.setdefault(tensor, []).append(op)
    for op in subgraph.operators:
        if inspection.op_type_name(model_object, op.opcodeIndex) not in ("SELECT", "SELECT_V2"):
            continue
        consumers = readers.get(op.outputs[0], [])
        if not consumers or not all(
            inspection.op_type_name(model_object, c.opcodeIndex) == "SOFTMAX" for c in consumers
        ):
            continue
        for constant_position, score_position in ((2, 1), (1, 2)):
            values = _constant_values(model_object, subgraph, op.inputs[constant_position])
            if values is not None and values.size and values.max() <= _MASK_FILL_THRESHOLD:
                yield op, score_position, constant_position
                break


def bound_mask_fill(model: bytes, feeds: Iterable[dict], *, margin: float = MASK_MARGIN) -> SurgeryResult:
    """Replaces huge negative attention-mask fills with a bound measured on data.

    keras-hub masks attention scores with about -1e9 before SOFTMAX. Calibrated
    into an int8 or int16 range, that constant takes the whole range and every
    real score rounds to the same value. Any fill at least `margin` below the
    smallest real score gives the same softmax, so the fill becomes
    `min(score) - margin`, with the scores measured by running the float model
    on `feeds`.

    Args:
      model: a float `.tflite` model.
      feeds: input dicts keyed by signature input name (calibration samples).
      margin: distance below the smallest observed score.

    Returns:
      The rewritten model and one line per mask changed.
    """
    import numpy as np  # pylint: disable=import-outside-toplevel

    schema = inspection.schema()
    model_object = inspection.load_model_object(model)
    subgraph = model_object.subgraphs[0]
    selects = list(_mask_selects(model_object, subgraph))
    if not selects:
        return SurgeryResult(model=bytes(model), changes=())
    score_tensors = [op.inputs[position] for op, position, _ in selects]
    minima = _observed_minima(model, feeds, score_tensors)
    changes = []
    for (op, _, constant_position), score_tensor in zip(selects, score_tensors):
        fill = float(np.floor(minima[score_tensor] - margin))
        old = subgraph.tensors[op.inputs[constant_position]]
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(np.full(tuple(old.shape) or (), fill, dtype=np.float32).tobytes(), dtype=np.uint8)
        model_object.buffers.append(buffer)
        bounded = schema.TensorT()
        bounded.name = inspection.decode_name(old.name) + "/bounded"
        bounded.shape = old.shape
        bounded.type = schema.TensorType.FLOAT32
        bounded.buffer = len(model_object.buffers) - 1
        subgraph.tensors.append(bounded)
        inputs = list(op.inputs)
        inputs[constant_position] = len(subgraph.tensors) - 1
        op.inputs = inputs
        changes.append(
            f"attention mask fill before {inspection.decode_name(subgraph.tensors[op.outputs[0]].name)}: "
            f"-1e9 -> {fill:g}"
        )
    return SurgeryResult(model=writing.pack(model_object), changes=tuple(changes))


def _observed_minima(model: bytes, feeds: Iterable[dict], tensors: list[int]) -> dict[int, float]:
    import numpy as np  # pylint: disable=import-outside-toplevel
    from ai_edge_litert import interpreter as litert  # pylint: disable=import-outside-toplevel

    # Intermediate tensors are only readable without delegates and with
    # preserve_all_tensors; this runs a handful of samples, so speed is moot.
    runner = litert.Interpreter(
        model_content=bytes(model),
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    runner.allocate_tensors()
    names = {d["name"]: d["index"] for d in runner.get_input_details()}
    signature = runner.get_signature_list()
    key = next(iter(signature))
    runner_inputs = runner.get_signature_runner(key).get_input_details()
    minima = {t: np.inf for t in tensors}
    count = 0
    for feed in feeds:
        for name, value in feed.items():
            index = runner_inputs[name]["index"] if name in runner_inputs else names[name]
            runner.set_tensor(index, np.asarray(value))
        runner.invoke()
        for tensor in tensors:
            minima[tensor] = min(minima[tensor], float(runner.get_tensor(tensor).min()))
        count += 1
    if count == 0:
        raise ValueError("bound_mask_fill needs at least one calibration sample.")
    return minima
