"""Rewrites of an exported derain graph (``onnx.ModelProto``, changed in place), and its sapnet metadata.

The exporter's graph is correct but not in the form ONNX Runtime runs fastest, nor the one static quantisation
handles best:

* :func:`fold_constant_slices`: the first stage's recurrent gates use only the input half of their weights (the
  state starts at zero, see :class:`~sapnet.models.ConvLSTMCell`); the exporter keeps the ``Slice`` of the
  weight, which is folded here into a weight of its own, so that every convolution reads an initializer
  (needed for per-channel weight quantisation);
* :func:`use_global_average_pool`: channel attention's spatial mean (``ReduceMean`` over H, W) becomes
  ``GlobalAveragePool``, which ONNX Runtime's blocked NCHWc CPU layout keeps (``ReduceMean`` forces a reorder
  of the features, and in an int8 graph it took as long as all the convolutions together);
* :func:`split_concat_convs` (int8 only): a convolution of ``cat(a, b)`` becomes ``conv(a) + conv(b)``, so that
  the LSTM's input features (ReLU outputs, [0, tens]) and its state (``h`` in (-1, 1)) are quantised with
  scales of their own instead of one shared scale, which rounds the state away.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sapnet.deploy.runtime import import_onnx

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "METADATA_PREFIX",
    "fold_constant_slices",
    "name_dynamic_axes",
    "prune",
    "read_metadata",
    "set_metadata",
    "split_concat_convs",
    "use_global_average_pool",
]

METADATA_PREFIX = "sapnet."
"""Prefix of the ``metadata_props`` keys sapnet writes (``sapnet.version``, ``sapnet.input``, ...)."""


class _Graph:
    """Lookups on a graph: initializers and ``Constant`` values by name, producers, 4-D channel counts."""

    def __init__(self, model: Any) -> None:
        onnx = import_onnx()
        self.onnx = onnx
        self.model = model
        self.graph = model.graph
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.constants = {
            n.output[0]: n.attribute[0].t
            for n in self.graph.node
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"
        }
        self.shapes: dict[str, list[int | str | None]] = {}
        for info in [*self.graph.input, *self.graph.value_info, *self.graph.output]:
            if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
                self.shapes[info.name] = [
                    d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                    for d in info.type.tensor_type.shape.dim
                ]

    def value(self, name: str) -> np.ndarray | None:
        """The constant array called ``name``, or ``None`` when it is computed."""
        tensor = self.initializers.get(name, self.constants.get(name))
        return None if tensor is None else self.onnx.numpy_helper.to_array(tensor)

    def add_initializer(self, array: np.ndarray, name: str) -> str:
        """Store ``array`` as a new initializer named ``name`` (made unique) and return its name."""
        unique, k = name, 1
        while unique in self.initializers or unique in self.constants:
            k += 1
            unique = f"{name}{k}"
        tensor = self.onnx.numpy_helper.from_array(array, unique)
        self.graph.initializer.append(tensor)
        self.initializers[unique] = tensor
        return unique

    def replace_nodes(self, nodes: Iterable[Any]) -> None:
        new = list(nodes)
        del self.graph.node[:]
        self.graph.node.extend(new)


def prune(model: Any) -> None:
    """Remove nodes none of whose outputs is used (repeatedly) and initializers no node reads."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        kept = [n for n in graph.node if any(o in used for o in n.output)]
        if len(kept) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(kept)
    used = {i for n in graph.node for i in n.input} | outputs
    initializers = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def fold_constant_slices(model: Any) -> int:
    """Replace each ``Slice`` of an initializer by constant starts / ends / axes / steps with the sliced
    initializer (named ``<weight>.slice``); returns how many were folded."""
    g = _Graph(model)
    renamed: dict[str, str] = {}
    nodes = []
    for node in g.graph.node:
        if node.op_type == "Slice" and node.input[0] in g.initializers:
            args = [g.value(name) if name else None for name in node.input[1:]]
            if all(a is not None for a in args[:2]) and all(
                a is not None for a, name in zip(args[2:], node.input[3:], strict=True) if name
            ):
                data = g.value(node.input[0])
                assert data is not None
                starts, ends = args[0], args[1]
                assert starts is not None and ends is not None
                axes = args[2] if len(args) > 2 and args[2] is not None else range(len(starts))
                steps = args[3] if len(args) > 3 and args[3] is not None else [1] * len(starts)
                index = [slice(None)] * data.ndim
                for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
                    index[int(axis)] = slice(int(start), int(min(end, data.shape[int(axis)])), int(step))
                sliced = data[tuple(index)].copy()
                renamed[node.output[0]] = g.add_initializer(sliced, f"{node.input[0]}.slice")
                continue
        nodes.append(node)
    for node in nodes:
        for k, name in enumerate(node.input):
            if name in renamed:
                node.input[k] = renamed[name]
    g.replace_nodes(nodes)
    prune(model)
    return len(renamed)


def use_global_average_pool(model: Any) -> int:
    """Replace each ``ReduceMean`` of a 4-D tensor over axes (2, 3) keeping the dimensions by
    ``GlobalAveragePool`` (the same values); returns how many were replaced."""
    g = _Graph(model)
    helper = g.onnx.helper
    count = 0
    nodes = []
    for node in g.graph.node:
        if node.op_type == "ReduceMean" and len(g.shapes.get(node.input[0], [])) == 4:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            axes_value = g.value(node.input[1]) if len(node.input) > 1 and node.input[1] else attrs.get("axes")
            axes = None if axes_value is None else sorted(int(a) % 4 for a in list(axes_value))
            if axes == [2, 3] and attrs.get("keepdims", 1) == 1:
                nodes.append(helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=node.name))
                count += 1
                continue
        nodes.append(node)
    g.replace_nodes(nodes)
    prune(model)
    return count


def split_concat_convs(model: Any) -> int:
    """Replace each ``Conv`` (one group) of a ``Concat`` along the channels, with an initializer weight and
    known channel counts, by one convolution per concatenated input (its slice of the weight; the bias on the
    first) and their sum; returns how many were split. Same values, up to float rounding."""
    g = _Graph(model)
    helper = g.onnx.helper
    producer = {out: node for node in g.graph.node for out in node.output}
    parts_of: dict[str, list[str]] = {}  # weight -> its per-input slices (weights shared by stages: made once)
    count = 0
    nodes = []
    for node in g.graph.node:
        cat = producer.get(node.input[0]) if node.op_type == "Conv" else None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        channels = [g.shapes.get(name, [None, None])[1] for name in cat.input] if cat is not None else []
        weight = g.value(node.input[1]) if cat is not None else None
        if (
            cat is None
            or cat.op_type != "Concat"
            or helper.get_attribute_value(cat.attribute[0]) % 4 != 1
            or attrs.get("group", 1) != 1
            or weight is None
            or not all(isinstance(c, int) for c in channels)
            or sum(channels) != weight.shape[1]  # type: ignore[arg-type]
        ):
            nodes.append(node)
            continue
        if node.input[1] not in parts_of:
            starts = [0]
            for c in channels:
                starts.append(starts[-1] + int(c))  # type: ignore[arg-type]
            parts_of[node.input[1]] = [
                g.add_initializer(weight[:, a:b].copy(), f"{node.input[1]}.part{k}")
                for k, (a, b) in enumerate(itertools.pairwise(starts))
            ]
        partial = []
        for k, (source, w) in enumerate(zip(cat.input, parts_of[node.input[1]], strict=True)):
            inputs = [source, w, *(node.input[2:] if k == 0 else [])]
            partial.append(f"{node.output[0]}.part{k}")
            nodes.append(helper.make_node("Conv", inputs, [partial[-1]], name=f"{node.name}.part{k}", **attrs))
        total = partial[0]
        for k, term in enumerate(partial[1:], 1):
            out = node.output[0] if k == len(partial) - 1 else f"{node.output[0]}.sum{k}"
            nodes.append(helper.make_node("Add", [total, term], [out], name=f"{node.name}.sum{k}"))
            total = out
        count += 1
    g.replace_nodes(nodes)
    prune(model)
    return count


def name_dynamic_axes(model: Any, names: Mapping[int, str]) -> None:
    """Rename the symbolic dimensions of the first graph input (``{axis: name}``, e.g. ``{0: "batch", 2:
    "height", 3: "width"}``) everywhere they appear: inputs, outputs and intermediate shapes."""
    graph = model.graph
    dims = graph.input[0].type.tensor_type.shape.dim
    mapping = {dims[axis].dim_param: name for axis, name in names.items() if dims[axis].dim_param}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        if info.type.HasField("tensor_type"):
            for d in info.type.tensor_type.shape.dim:
                if d.dim_param in mapping:
                    d.dim_param = mapping[d.dim_param]


def set_metadata(model: Any, metadata: Mapping[str, str]) -> None:
    """Set ``metadata_props`` entries (keys prefixed with :data:`METADATA_PREFIX` when they are not already),
    replacing entries of the same key."""
    items = {k if k.startswith(METADATA_PREFIX) else METADATA_PREFIX + k: str(v) for k, v in metadata.items()}
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in items]
    del model.metadata_props[:]
    for key, value in [*kept, *items.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(model: Any) -> dict[str, str]:
    """The sapnet ``metadata_props`` of a ``ModelProto`` (or of the ``.onnx`` file a path names), keys without
    :data:`METADATA_PREFIX`."""
    if not hasattr(model, "metadata_props"):
        model = import_onnx("reading ONNX metadata").load(str(model), load_external_data=False)
    n = len(METADATA_PREFIX)
    return {p.key[n:]: p.value for p in model.metadata_props if p.key.startswith(METADATA_PREFIX)}
