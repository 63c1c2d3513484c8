"""Checks and edits of exported ONNX graphs: uint8 inputs feed a Cast first (what TensorRT needs), and
the float16 conversion that keeps the numerically fragile nodes in float32."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx


class ExportError(RuntimeError):
    """The exported graphs disagree with torch; nothing was written."""


# Ops float16 keeps in float32: their reductions (mean/variance, exp-sum) lose most to float16 rounding
# and overflow. The exporter emits nn.LayerNorm as one LayerNormalization at opset 17 (no decomposed
# ReduceMean/Pow/Sqrt form to catch), and the final F.normalize (ReduceL2, Clip, Expand, Div) is kept by
# node: see _l2_normalisation_nodes.
FP32_OPS = ("LayerNormalization", "Softmax")


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {name: node for node in graph.node for name in node.output if name}


def _subgraph_names(node: onnx.NodeProto) -> set[str]:
    """Every tensor name read inside ``node``'s subgraphs (If/Loop bodies): outer tensors they may use."""
    names: set[str] = set()
    for attribute in node.attribute:
        graphs = [attribute.g, *attribute.graphs] if attribute.HasField("g") else attribute.graphs
        for graph in graphs:
            for inner in graph.node:
                names.update(inner.input)
                names |= _subgraph_names(inner)
    return names


def _reads(node: onnx.NodeProto, name: str) -> bool:
    return name in node.input or name in _subgraph_names(node)


def check_cast_first(path: Path) -> None:
    """Raise ExportError unless every node reading a uint8 graph input is a Cast.

    TensorRT accepts uint8 network inputs only when they feed a Cast directly; otherwise ONNX Runtime
    starts the TensorRT subgraph at a later float tensor that no optimisation profile names, and the engine
    is built for whatever shape comes first (or the node runs outside TensorRT)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    for graph_input in graph.input:
        if (
            graph_input.name in initializers
            or graph_input.type.tensor_type.elem_type != onnx.TensorProto.UINT8
        ):
            continue
        readers = [node for node in graph.node if _reads(node, graph_input.name)]
        wrong = [f"{node.op_type} {node.name!r}" for node in readers if node.op_type != "Cast"]
        if wrong or not readers:
            raise ExportError(
                f"uint8 input {graph_input.name!r} feeds {', '.join(wrong) or 'nothing'}, not "
                "only Cast nodes: TensorRT takes a uint8 input only into a Cast (cast to float before "
                "any transpose or arithmetic)"
            )


def _l2_normalisation_nodes(graph: onnx.GraphProto) -> list[str]:
    """The names of the nodes of the graph's final L2 normalisation (``F.normalize``: ReduceL2, Clip with
    its epsilon, Expand, Div, and the ``.float()`` Cast before them), which float16 keeps in float32: a
    float16 ReduceL2 overflows once the squares sum past 65504, and the 1e-12 epsilon flushes to zero."""
    producers = _producers(graph)

    def ancestors(name: str, found: set[str]) -> set[str]:
        stack = [name]
        while stack:
            node = producers.get(stack.pop())
            if node is not None and node.name not in found:
                found.add(node.name)
                stack.extend(node.input)
        return found

    output = graph.output[0].name
    upstream = ancestors(output, set())
    norms = [node for node in graph.node if node.op_type == "ReduceL2" and node.name in upstream]
    if not norms:
        raise ExportError(f"no ReduceL2 before {output!r}: the graph does not end in F.normalize")
    features = norms[-1].input[0]  # topological order: the last one is the final normalisation
    tail = upstream - ancestors(features, set())
    source = producers.get(features)
    if source is not None and source.op_type == "Cast":
        tail.add(source.name)
    return sorted(tail)


def _cast_to(node: onnx.NodeProto) -> int:
    return next(a.i for a in node.attribute if a.name == "to")


def _elem_types(graph: onnx.GraphProto) -> dict[str, int]:
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)}
    return types | {t.name: t.data_type for t in graph.initializer}


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _tidy_fp16(graph: onnx.GraphProto, float_outputs: set[str]) -> None:
    """Undo what the converter leaves around float32 nodes: float32 -> float16 -> float32 cast pairs
    between them (it removes a pair only when the tensor has one reader), and outputs turned float16 when
    a float32 node produces them; then drop the nodes nobody reads."""
    FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    types, producers = _elem_types(graph), _producers(graph)
    for node in graph.node:
        first = producers.get(node.input[0]) if node.op_type == "Cast" else None
        if (
            first is not None
            and _cast_to(node) == FLOAT
            and first.op_type == "Cast"
            and _cast_to(first) == FLOAT16
            and types.get(first.input[0]) == FLOAT
        ):
            _rename_uses(graph, node.output[0], first.input[0])
    for output in graph.output:
        if output.name not in float_outputs or output.type.tensor_type.elem_type != FLOAT16:
            continue
        cast = producers[output.name]
        source = cast.input[0] if cast.op_type == "Cast" else ""
        if types.get(source) != FLOAT or source not in producers:
            raise ExportError(f"float16 conversion left output {output.name!r} float16")
        graph.node.remove(cast)  # the float32 node writes the output itself; its other readers follow
        producer = producers[source]
        producer.output[list(producer.output).index(source)] = output.name
        _rename_uses(graph, source, output.name)
        output.type.tensor_type.elem_type = FLOAT
    outputs = {o.name for o in graph.output}
    while True:
        read = outputs.union(*(set(n.input) | _subgraph_names(n) for n in graph.node))
        dead = [n for n in graph.node if not read.intersection(n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    live = read.union(*(set(n.output) for n in graph.node))
    kept = [v for v in graph.value_info if v.name in live and v.name not in outputs]
    graph.ClearField("value_info")
    graph.value_info.extend(kept)


def _untie_initializers(graph: onnx.GraphProto, kept: set[str]) -> None:
    """Give float32 nodes (``kept`` by name) weights of their own.

    The converter keeps an initializer float32 if any float32 node reads it, so another reader (or an
    Identity the exporter put on a deduplicated weight) would be typed float16 but read float32. Identity
    nodes on initializers are removed (their readers read the initializer), and an initializer read by both
    kinds of node is copied for the float32 ones."""
    weights = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    for node in list(graph.node):
        if node.op_type == "Identity" and node.input[0] in weights and node.output[0] not in outputs:
            _rename_uses(graph, node.output[0], node.input[0])
            graph.node.remove(node)
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in set(node.input) & weights.keys():
            readers.setdefault(name, []).append(node)
    for name, nodes in readers.items():
        float32 = [node for node in nodes if node.name in kept]
        if float32 and len(float32) < len(nodes) and weights[name].data_type == onnx.TensorProto.FLOAT:
            copy = graph.initializer.add()
            copy.CopyFrom(weights[name])
            copy.name = f"{name}_float32"
            for node in float32:
                node.input[:] = [copy.name if i == name else i for i in node.input]


def to_fp16(path: Path) -> None:
    """Convert weights and compute to float16, keeping uint8/int64 inputs and a float32 output, and
    keeping LayerNormalization, Softmax and the final L2 normalisation in float32."""
    from onnxconverter_common import float16

    model = onnx.load(str(path))
    float_outputs = {
        o.name for o in model.graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    }
    kept = [n.name for n in model.graph.node if n.op_type in FP32_OPS] + _l2_normalisation_nodes(model.graph)
    blocked = {n.name for n in model.graph.node if n.op_type in float16.DEFAULT_OP_BLOCK_LIST}
    _untie_initializers(model.graph, {*kept, *blocked})
    with warnings.catch_warnings():  # it warns that it truncates infinities (masks), which it keeps
        warnings.filterwarnings("ignore", r"the float32 number -?inf will be truncated")
        model = float16.convert_float_to_float16(
            model,
            keep_io_types=True,
            op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, *FP32_OPS],
            node_block_list=kept,
        )
    # The converter retypes the outputs of the graph's own Cast-to-float nodes (uint8 pixels, masks)
    # to float16 but leaves their target type: point those casts at float16 too.
    declared = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    for node in model.graph.node:
        if node.op_type == "Cast" and declared.get(node.output[0]) == onnx.TensorProto.FLOAT16:
            for attribute in node.attribute:
                if attribute.name == "to" and attribute.i == onnx.TensorProto.FLOAT:
                    attribute.i = onnx.TensorProto.FLOAT16
    _tidy_fp16(model.graph, float_outputs)
    onnx.checker.check_model(model, full_check=True)  # types consistent after the edits above
    onnx.save(model, str(path))
