"""Gives operand B of every int8 x int8 BATCH_MATMUL a zero point of 0, so XNNPACK runs it.

In ai-edge-litert 2.1-2.3, the XNNPACK delegate takes an int8 BATCH_MATMUL
whose two inputs are both activations (attention's Q.K^T and P.V) only when
input 1 (B) has zero point 0: XNNPACK's qs8 batch-matmul has no term for a
B zero point, and the delegate refuses the node ("non-zero zero point %d of
input 1 ... is not supported"). The converter calibrates K and V to
asymmetric ranges (zero points -5, 7, 24, ...), so every attention BMM falls
back to LiteRT's built-in int8 BMM, a scalar reference loop without threads:
on gpt2-6l that is more than half of the int8 forward pass (README "Full
int8: where it stands").

`symmetric_matmul_operands` re-parametrises B after conversion. B's tensor
cannot change alone: the ops between it and the op that computes it
(RESHAPE, TRANSPOSE, TILE, ...) move int8 values without requantizing, so
their inputs and outputs must keep one scale and zero point. The tensors so
tied form a *component*; each of them gets the symmetric scale

    s' = max(|(-128 - zp) * s|, |(127 - zp) * s|) / 127,   zero point 0,

which still represents the old range: at most 255/127 times coarser, and
1.01-1.37x on the K/V tensors of tiny-gpt2, gpt2-6l and SmolLM2-135M. The op
that computes the component's root (a FULLY_CONNECTED, ADD, QUANTIZE, ...)
requantizes its result to whatever output parameters its tensor has, and
every computing reader dequantizes with its input's parameters, so nothing
else needs to change.

Which ops tie their int8 operands was checked against LiteRT 2.3.0 rather
than assumed: one-op models with the output's scale doubled and zero point
moved showed GATHER, RESHAPE, SPLIT, TILE, TRANSPOSE and SELECT_V2 copying
the raw int8 values unchanged (a wrong result, not an error), and XNNPACK failing to prepare such a TRANSPOSE or
SPLIT; the built-in CONCATENATION and PACK kernels refuse unequal parameters
in Prepare (LiteRT `tflite/kernels/concatenation.cc`: "Make sure there is no
re-scaling needed for Int8 quantized kernel"; `pack.cc`). The remaining ops of `_TIED_OPS` are pure data movement
or (MAXIMUM, MINIMUM, REDUCE_MAX, ...) compare raw values, and the
converter's quantizer ties them the same way.

Only `ai_edge_litert`'s schema, `flatbuffers` and numpy are needed.
"""

from __future__ import annotations

import collections
import dataclasses

from converter.passes.result import SurgeryResult
from converter.tflite_file import inspection, writing

# Ops whose int8 kernel moves (or compares) int8 values without requantizing
# them: every int8 input and output of such an op must share one scale and
# zero point. Their other operands (shapes, indices, axes, conditions) are
# never int8.
_TIED_OPS = frozenset(
    {
        "RESHAPE",
        "TRANSPOSE",
        "SQUEEZE",
        "EXPAND_DIMS",
        "TILE",
        "BROADCAST_TO",
        "GATHER",
        "GATHER_ND",
        "SLICE",
        "STRIDED_SLICE",
        "SPLIT",
        "SPLIT_V",
        "PACK",
        "UNPACK",
        "CONCATENATION",
        "PAD",
        "PADV2",
        "MIRROR_PAD",
        "REVERSE_V2",
        "DEPTH_TO_SPACE",
        "SPACE_TO_DEPTH",
        "BATCH_TO_SPACE_ND",
        "SPACE_TO_BATCH_ND",
        "SELECT",
        "SELECT_V2",
        "MAXIMUM",
        "MINIMUM",
        "MAX_POOL_2D",
        "REDUCE_MAX",
        "REDUCE_MIN",
        "RESIZE_NEAREST_NEIGHBOR",
    }
)
# int8 kernels that insist on fixed output parameters (1/256 and -128 for
# SOFTMAX/LOGISTIC, ...): a tensor they write cannot be re-parametrised.
_FIXED_OUTPUT_OPS = frozenset({"SOFTMAX", "LOG_SOFTMAX", "LOGISTIC", "TANH"})
# Ops that hand a tensor to another subgraph, whose tensors would then
# disagree with it.
_SUBGRAPH_OPS = frozenset({"WHILE", "IF", "CALL", "CALL_ONCE"})
_INT8_MIN, _INT8_MAX = -128, 127


def symmetric_scale(scale: float, zero_point: int) -> float:
    """The scale, with zero point 0, that still covers an int8 tensor's representable range.

    Args:
      scale: the tensor's scale.
      zero_point: its zero point.

    Returns:
      max(|(-128 - zp) * s|, |(127 - zp) * s|) / 127.
    """
    return max(abs((_INT8_MIN - zero_point) * scale), abs((_INT8_MAX - zero_point) * scale)) / _INT8_MAX


@dataclasses.dataclass
class Component:
    """Tensors of one subgraph that must keep one scale and zero point, and why they cannot change.

    Attributes:
      subgraph: index of the subgraph.
      tensors: the tied tensors (operand B of at least one BATCH_MATMUL among them).
      matmuls: indices of the BATCH_MATMULs that read one of them as input 1.
      blocker: why the component must keep its parameters, or "" when it can change.
    """

    subgraph: int
    tensors: set[int] = dataclasses.field(default_factory=set)
    matmuls: set[int] = dataclasses.field(default_factory=set)
    blocker: str = ""


def _listed(values):
    # The object API leaves absent vectors as None and present ones as numpy arrays.
    return values if values is not None else []


class _Graph:
    """Producer, readers and op types of one subgraph."""

    def __init__(self, model_object, subgraph_index: int) -> None:
        self.model_object = model_object
        self.index = subgraph_index
        self.subgraph = model_object.subgraphs[subgraph_index]
        self.operators = self.subgraph.operators or []
        self.tensors = self.subgraph.tensors or []
        self.kinds = [inspection.op_type_name(model_object, op.opcodeIndex) for op in self.operators]
        self.producer = {t: i for i, op in enumerate(self.operators) for t in _listed(op.outputs)}
        self.readers: dict[int, list[int]] = collections.defaultdict(list)
        for i, op in enumerate(self.operators):
            for t in _listed(op.inputs):
                if t >= 0:
                    self.readers[t].append(i)
        self.inputs = {int(t) for t in _listed(self.subgraph.inputs)}
        self.outputs = {int(t) for t in _listed(self.subgraph.outputs)}
        schema = inspection.schema()
        self.int8 = schema.TensorType.INT8
        self.builtin = set(inspection.enum_names(schema.BuiltinOperator).values())

    def is_constant(self, tensor: int) -> bool:
        buffer = self.tensors[tensor].buffer
        if buffer <= 0 or buffer >= len(self.model_object.buffers):
            return False
        data = self.model_object.buffers[buffer].data
        return data is not None and len(data) > 0

    def params(self, tensor: int) -> tuple[tuple[float, ...], tuple[int, ...]] | None:
        """(scales, zero points) of a quantized tensor, None if it has no scale."""
        q = self.tensors[tensor].quantization
        if q is None or q.scale is None or len(q.scale) == 0:
            return None
        zero_points = q.zeroPoint if q.zeroPoint is not None and len(q.zeroPoint) else [0] * len(q.scale)
        return tuple(float(s) for s in q.scale), tuple(int(z) for z in zero_points)

    def tied_operands(self, op_index: int) -> list[int]:
        """The int8 inputs and outputs of a tied op: they share one scale and zero point."""
        op = self.operators[op_index]
        operands = [*_listed(op.inputs), *_listed(op.outputs)]
        return [t for t in operands if t >= 0 and self.tensors[t].type == self.int8]


def _component(graph: _Graph, start: int) -> Component:
    """Walks from operand B through tied ops, backwards and forwards, to every tensor sharing its parameters."""
    component = Component(subgraph=graph.index)
    blockers: list[str] = []
    todo = [start]
    while todo:
        tensor = todo.pop()
        if tensor in component.tensors:
            continue
        component.tensors.add(tensor)
        # The parameters of these belong to someone else: the caller feeding
        # the graph, the weights' buffer (possibly shared), the app reading
        # the output.
        if tensor in graph.inputs:
            blockers.append("graph input")
        if tensor in graph.outputs:
            blockers.append("graph output")
        if graph.is_constant(tensor):
            blockers.append("constant")
        params = graph.params(tensor)
        if params is not None and len(params[0]) > 1:
            blockers.append("per-channel")
        producer = graph.producer.get(tensor)
        if producer is not None:
            kind = graph.kinds[producer]
            if kind in _TIED_OPS:
                todo.extend(graph.tied_operands(producer))
            elif kind in _FIXED_OUTPUT_OPS:
                blockers.append(f"written by {kind} (fixed output parameters)")
            elif kind in _SUBGRAPH_OPS or kind not in graph.builtin:
                blockers.append(f"written by {kind}")
        for reader in graph.readers.get(tensor, ()):
            kind = graph.kinds[reader]
            if kind in _TIED_OPS:
                todo.extend(graph.tied_operands(reader))
            elif kind == "BATCH_MATMUL" and list(_listed(graph.operators[reader].inputs))[1:2] == [tensor]:
                component.matmuls.add(reader)
            elif kind in _SUBGRAPH_OPS or kind not in graph.builtin:
                blockers.append(f"read by {kind}")
    all_params = {graph.params(t) for t in component.tensors}
    if len(all_params) != 1 or None in all_params:
        # A tied op whose operands disagree was converted by something that
        # does not tie it: re-parametrising one side would change the other's meaning.
        blockers.append("tied tensors with different parameters")
    component.blocker = ", ".join(dict.fromkeys(blockers))
    return component


def find_components(model_object) -> list[Component]:
    """The tied components holding an int8 activation that a BATCH_MATMUL reads as input 1 with a zero point != 0.

    Args:
      model_object: a `ModelT` (`inspection.load_model_object`).

    Returns:
      One `Component` per group of tied tensors, in order of the first BATCH_MATMUL reading it.
    """
    components = []
    for subgraph_index in range(len(model_object.subgraphs)):
        graph = _Graph(model_object, subgraph_index)
        covered: set[int] = set()
        for index, kind in enumerate(graph.kinds):
            inputs = graph.operators[index].inputs
            if kind != "BATCH_MATMUL" or inputs is None or len(inputs) < 2:
                continue
            operand = int(inputs[1])
            params = graph.params(operand)
            # int16 activations are symmetric by construction; fp32 and the
            # dynamic-range (fp32 x int8 weights) BMMs are delegated already.
            if operand < 0 or graph.tensors[operand].type != graph.int8 or params is None:
                continue
            if all(z == 0 for z in params[1]) or operand in covered:
                continue
            component = _component(graph, operand)
            covered |= component.tensors
            components.append(component)
    return components


def symmetric_matmul_operands(model: bytes) -> SurgeryResult:
    """Re-parametrises operand B of every int8 BATCH_MATMUL, and the tensors tied to it, to zero point 0.

    XNNPACK (ai-edge-litert 2.1-2.3) then runs these BMMs instead of LiteRT's
    scalar reference kernel; on gpt2-6l this halves the int8 forward pass. The
    only cost is a slightly coarser scale on K and V (see `symmetric_scale`).
    Components that cannot change (a graph input or output, a constant, a
    per-channel tensor, a fixed-output producer such as SOFTMAX, a control-flow
    op) are left alone and reported.

    Args:
      model: a `.tflite` model. fp32, dynamic-range and int16x8 models, and
        int8 models whose BMM operands are symmetric already, come back unchanged.

    Returns:
      The rewritten model and at most two lines: what was made symmetric, and
      which BMM operands had to stay asymmetric and why. No lines (and the
      same bytes) when no BMM needed it.
    """
    model_object = inspection.load_model_object(model)
    components = find_components(model_object)
    if not components:
        return SurgeryResult(model=bytes(model), changes=())
    changed = [c for c in components if not c.blocker]
    changes = []
    growth = []
    for component in changed:
        subgraph = model_object.subgraphs[component.subgraph]
        first = subgraph.tensors[next(iter(component.tensors))].quantization
        old_scale, zero_point = float(first.scale[0]), int(first.zeroPoint[0])
        new_scale = symmetric_scale(old_scale, zero_point)
        growth.append(new_scale / old_scale)
        for tensor in component.tensors:
            q = subgraph.tensors[tensor].quantization
            q.scale, q.zeroPoint = [new_scale], [0]
            # Keep the optional float range consistent with the new parameters.
            if q.min is not None and len(q.min):
                q.min = [_INT8_MIN * new_scale]
            if q.max is not None and len(q.max):
                q.max = [_INT8_MAX * new_scale]
    if changed:
        matmuls = sum(len(c.matmuls) for c in changed)
        tensors = sum(len(c.tensors) for c in changed)
        changes.append(
            f"attention BATCH_MATMUL operand B made symmetric (zero point 0) so XNNPACK runs it: "
            f"{matmuls} BMMs, {tensors} tensors, scales x{min(growth):.2f}-x{max(growth):.2f}"
        )
    blocked = [c for c in components if c.blocker]
    if blocked:
        reasons = collections.Counter(c.blocker for c in blocked)
        changes.append(
            f"{sum(len(c.matmuls) for c in blocked)} BATCH_MATMUL operand B left asymmetric "
            f"(XNNPACK will not run them): " + "; ".join(f"{n} x {why}" for why, n in reasons.items())
        )
    if not changed:
        return SurgeryResult(model=bytes(model), changes=tuple(changes))
    return SurgeryResult(model=writing.pack(model_object), changes=tuple(changes))
