"""Cutting one operator out of a model into a model of its own.

The op profiler times each op alone this way, the quantization debugger runs
each op on exact inputs, and the runtime probe loads each op signature in
other runtimes. numpy, `ai_edge_litert`'s schema and `flatbuffers` only.
"""

from __future__ import annotations

import copy

from converter.tflite_file import writing
from converter.tflite_file.inspection import schema


def single_op_model(model_object, op_index: int) -> tuple[bytes, list[int]]:
    """A model holding only operator `op_index` of subgraph 0, with its constants.

    The op's non-constant inputs become the model's inputs, in the op's input
    order. An op on constants alone (fp16 weights' DEQUANTIZE) gets its first
    input fed at run time instead, since a runtime would fold it away or a
    delegate refuse a graph with nothing to compute.

    Args:
      model_object: a `ModelT` (`inspection.load_model_object`).
      op_index: the op's position in subgraph 0's execution order.

    Returns:
      (the model bytes, the source model's tensor indices that became its inputs, in order).

    Raises:
      ValueError: the model has more than one subgraph (control flow is not cut).
    """
    fb = schema()
    if len(model_object.subgraphs) != 1:
        raise ValueError("Single-op models are cut from single-subgraph models only.")
    source = model_object.subgraphs[0]
    operator = source.operators[op_index]
    single = fb.ModelT()
    single.version = model_object.version
    single.description = b"keras-lm-litert single-op model"
    single.buffers = [fb.BufferT()]
    tensors, mapping, graph_inputs = [], {}, []

    def add(index: int) -> int:
        if index < 0:
            return index
        if index not in mapping:
            tensor = copy.copy(source.tensors[index])
            quantization = tensor.quantization
            if quantization is not None and quantization.detailsType == fb.QuantizationDetails.BlockwiseQuantization:
                # Blockwise int4 scales live in a tensor of their own, which the cut model needs too.
                tensor.quantization = copy.copy(quantization)
                tensor.quantization.details = copy.copy(quantization.details)
                tensor.quantization.details.scales = add(int(quantization.details.scales))
            buffer = model_object.buffers[tensor.buffer] if tensor.buffer > 0 else None
            if buffer is not None and buffer.data is not None and len(buffer.data) > 0:
                kept = fb.BufferT()
                kept.data = buffer.data
                single.buffers.append(kept)
                tensor.buffer = len(single.buffers) - 1
            else:
                tensor.buffer = 0
                graph_inputs.append(index)
            mapping[index] = len(tensors)
            tensors.append(tensor)
        return mapping[index]

    inputs = [add(int(i)) for i in operator.inputs]
    if not graph_inputs:
        first = next(int(i) for i in operator.inputs if int(i) >= 0)
        tensors[mapping[first]].buffer = 0
        graph_inputs.append(first)
    sources = list(graph_inputs)
    outputs = [add(int(i)) for i in operator.outputs]
    kept_operator = copy.copy(operator)
    kept_operator.opcodeIndex = 0
    kept_operator.inputs = inputs
    kept_operator.outputs = outputs
    if operator.intermediates is not None and len(operator.intermediates):
        kept_operator.intermediates = [add(int(i)) for i in operator.intermediates]
    subgraph = fb.SubGraphT()
    subgraph.tensors = tensors
    subgraph.inputs = [mapping[i] for i in sources]
    subgraph.outputs = outputs
    subgraph.operators = [kept_operator]
    subgraph.name = b"single_op"
    single.subgraphs = [subgraph]
    single.operatorCodes = [copy.copy(model_object.operatorCodes[operator.opcodeIndex])]
    single.signatureDefs = []
    single.metadata = []
    return writing.pack(single), sources
