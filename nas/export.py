"""Export a subnet as a standalone model: safetensors + JSON manifest, ONNX, optionally TorchScript (verified).

``export(net, cfg, out_dir)`` extracts the static subnet, writes the requested formats and a
``manifest.json`` (config, key, space, architecture, metrics, input shape, library versions, files with
SHA-256, TorchScript- and ONNX-vs-torch differences). The TorchScript and ONNX files are loaded back and run
on the sample inputs; one whose outputs differ from the model's by more than the tolerance fails the export
(see :func:`export`). Everything is first written into a temporary directory next to ``out_dir`` and renamed
into place at the end, so ``out_dir`` never holds a half-written or unverified export.

``load_exported(out_dir)`` rebuilds the static model from the manifest's architecture and the safetensors
weights with :func:`nas.static.build` (no supernet code, no pickle) after checking every file's SHA-256.

Example:
    >>> import tempfile, pathlib, torch
    >>> from search_spaces import mobilenetv3
    >>> net = mobilenetv3.supernet("small").eval()
    >>> out = export(net, net.space.min(), pathlib.Path(tempfile.mkdtemp()) / "m", formats=("safetensors",))
    >>> model = load_exported(out)
    >>> x = torch.randn(1, *net.input_shape(net.space.min())[1:])
    >>> bool(torch.allclose(model(x), net.extract(net.space.min()).eval()(x)))
    True
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas import semi_structured, static
from nas.atomic import give_default_permissions, remove_stale_temps, temp_prefix
from nas.supernet import Supernet

__all__ = [
    "FORMATS",
    "INT8_QUANTIZE",
    "ExportError",
    "activation_products",
    "crop_dead_taps",
    "export",
    "export_onnx_int8",
    "fuse_for_int8",
    "has_attention",
    "integer_hard_activations",
    "load_exported",
    "measured_density",
]

FORMATS = ("safetensors", "torchscript", "onnx", "onnx-int8")
# TorchScript is opt-in: torch.jit.trace is deprecated in torch 2.13 (it warns on every call), and ONNX is what
# deployment runtimes load. The `nas export` command has the same default.
DEFAULT_FORMATS = ("safetensors", "onnx")
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
TORCHSCRIPT = "model.torchscript.pt"
ONNX = "model.onnx"
ONNX_INT8 = "model.int8.onnx"
MANIFEST_VERSION = 1
# A float format may differ from the eager model by DEFAULT_VERIFY_TOLERANCE x max|output| + VERIFY_ATOL. Correct
# exports of mobilenetv3 / resnet / vit subnets differ by at most 1.2e-6 x max|output| (ONNX; TorchScript is
# exact); 1e-3 relative noise on the weights already moves the outputs by 1.4e-3 x max|output| or more.
DEFAULT_VERIFY_TOLERANCE = 1e-4
VERIFY_ATOL = 1e-6  # the floor for outputs that are (nearly) all zero


class ExportError(RuntimeError):
    """An export could not be written, or an exported directory is missing, corrupt or inconsistent."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _versions() -> dict[str, str]:
    import nas

    versions = {"python": platform.python_version(), "torch": torch.__version__, "nas": nas.__version__}
    for module in ("numpy", "safetensors", "onnx", "onnxruntime"):
        with contextlib.suppress(ImportError):  # optional for the formats that do not need it
            versions[module] = __import__(module).__version__
    return versions


def _write_onnx(model: nn.Module, sample: torch.Tensor, path: Path) -> None:
    """ONNX with a dynamic batch dimension (input ``input``, output ``logits``).

    The TorchScript-based exporter is used first: with torch 2.13 it handles these plain-layer models
    reliably and several times faster than the ``torch.export`` path, which is the fallback.
    """
    kwargs = {"input_names": ["input"], "output_names": ["logits"]}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (sample,),
                str(path),
                dynamo=False,
                opset_version=17,
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                **kwargs,
            )
    except Exception as legacy_error:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model,
                    (sample,),
                    str(path),
                    dynamo=True,
                    external_data=False,
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                    **kwargs,
                )
        except Exception as dynamo_error:
            raise ExportError(
                f"ONNX export failed with both exporters: legacy: {legacy_error!r}; dynamo: {dynamo_error!r}"
            ) from dynamo_error


def _onnx_runner(source: Path | bytes) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function that runs an ONNX model (a file or its serialized bytes) in onnxruntime on CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(
        source if isinstance(source, bytes) else str(source), providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.detach().cpu().numpy()})[0])


def _max_abs_diff(
    run: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, inputs: Sequence[torch.Tensor]
) -> tuple[float, float]:
    """``(max |run(x) - model(x)|, max |model(x)|)`` over ``inputs`` (NaN when an output is NaN, infinite when
    the shapes differ)."""
    diffs, scales = [], []
    with torch.no_grad():
        for x in inputs:
            expected = model(x).detach().cpu().float()
            got = run(x).detach().cpu().float()
            scales.append(expected.abs().max())
            diffs.append(
                (got - expected).abs().max() if got.shape == expected.shape else torch.tensor(torch.inf)
            )
    return float(torch.stack(diffs).max()), float(torch.stack(scales).max())  # torch's max keeps a NaN


def onnx_max_abs_diff(path: Path, model: nn.Module, inputs: Sequence[torch.Tensor]) -> float:
    """Largest |onnxruntime - torch| output difference over ``inputs`` (onnxruntime on CPU)."""
    return _max_abs_diff(_onnx_runner(path), model, inputs)[0]


class _UnroundedActQuant(nn.Module):
    """:meth:`nas.static.ActQuant._explicit` without its ``Round``: scaling and clipping to the 8-bit range only.

    The ONNX check of a quantized subnet compares this (in torch) with the exported graph whose ``Round`` nodes
    are made identities: a float rounding tie flips a rounding step in one and not the other, and that one
    step can move the logits by a few percent, but without rounding both sides compute a continuous function.
    """

    def __init__(self, quant: static.ActQuant):
        super().__init__()
        self.scale, self.zero_point = quant.scale, quant.zero_point

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.tensor(self.scale, dtype=x.dtype)
        zero_point = float(self.zero_point)
        q = torch.clamp(x * (1.0 / scale) + zero_point, 0.0, 255.0)
        return (q - zero_point) * scale


def _replace_act_quant(model: nn.Module, make: Callable[[static.ActQuant], nn.Module]) -> nn.Module:
    """A copy of ``model`` with every 8-bit activation fake-quantizer ``q`` replaced by ``make(q)``."""
    clone = copy.deepcopy(model)
    for module in list(clone.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, static.ActQuant):
                setattr(module, name, make(child))
    return clone


def _onnx_without_rounding(path: Path, quantizers: int) -> bytes | None:
    """The ONNX model at ``path`` with its ``Round`` nodes made identities (serialized), or ``None`` when it
    holds more of them than ``quantizers``: then some are the model's own, not the activation quantizers'.
    (Fewer is fine: the exporter merges quantizers of the same tensor with the same range.)"""
    import onnx

    graph = onnx.load(str(path))
    rounds = [node for node in graph.graph.node if node.op_type == "Round"]
    if len(rounds) > quantizers:
        return None
    for node in rounds:
        node.op_type = "Identity"
    return graph.SerializeToString()


def _check_close(fmt: str, diff: float, scale: float, tolerance: float | None, how: str = "") -> None:
    """Raise :class:`ExportError` when ``diff`` exceeds ``tolerance * scale + VERIFY_ATOL`` (``None``: no check)."""
    if tolerance is None:
        return
    bound = tolerance * scale + VERIFY_ATOL
    if not diff <= bound:  # also catches NaN
        raise ExportError(
            f"export: the {fmt} file does not compute what the model does: max |{fmt} - torch|{how} = {diff:.3g} "
            f"on the sample inputs, above the tolerance {bound:.3g} ({tolerance:g} x max |output| {scale:.3g} "
            f"+ {VERIFY_ATOL:g}); nothing was written. An exporter bug or an op {fmt} runs differently: report "
            "it; to accept the difference, raise the tolerance (verify_tolerance=..., nas export --tolerance X) "
            "or skip the check (verify_tolerance=None, nas export --no-verify)"
        )


def _without_act_quant(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with the 8-bit activation fake-quantizers replaced by identities."""
    return _replace_act_quant(model, lambda quant: nn.Identity())


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def fuse_for_int8(model: Any) -> dict[str, int]:
    """Rewrite a float ONNX graph (in place) into ops that quantize with fewer Q/DQ steps in onnxruntime.

    * ``Mul(x, HardSigmoid(x; 1/6, 1/2))`` (how onnxruntime's pre-processing expands ``HardSwish``) becomes one
      ``HardSwish(x)`` (opset >= 14). Otherwise the quantizer quantizes the HardSigmoid output and runs the
      product as a ``QLinearMul``: an extra requantized tensor and an integer kernel per h-swish.
    * ``ReduceMean`` over H, W with ``keepdims`` (squeeze-excite pooling) becomes ``GlobalAveragePool``,
      which onnxruntime runs on the uint8 tensor (``QLinearGlobalAveragePool``) instead of dequantizing it.

    Both rewrites compute the same function. Returns how many nodes of each kind were rewritten.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    consumers.update({o.name: consumers.get(o.name, 0) + 1 for o in graph.output})
    initializers = {i.name: i for i in graph.initializer}
    dropped: set[int] = set()
    replaced: dict[int, Any] = {}
    counts = {"HardSwish": 0, "GlobalAveragePool": 0}
    for node in graph.node:
        if node.op_type == "Mul" and opset >= 14 and len(node.input) == 2:
            for x, gate in (node.input, reversed(node.input)):
                hs = producer.get(gate)
                if hs is None or hs.op_type != "HardSigmoid" or hs.input[0] != x or consumers[gate] != 1:
                    continue
                a = _attrs(hs)
                if abs(a.get("alpha", 0.2) - 1 / 6) > 1e-6 or abs(a.get("beta", 0.5) - 0.5) > 1e-6:
                    continue
                dropped.add(id(hs))
                replaced[id(node)] = helper.make_node(
                    "HardSwish", [x], list(node.output), name=f"{node.name or 'mul'}_hardswish{len(replaced)}"
                )
                counts["HardSwish"] += 1
                break
        elif node.op_type == "ReduceMean":
            a = _attrs(node)
            axes = a.get("axes")
            if axes is None and len(node.input) > 1 and node.input[1] in initializers:
                axes = numpy_helper.to_array(initializers[node.input[1]]).tolist()
            if (
                axes is not None
                and sorted(int(v) for v in axes) in ([2, 3], [-2, -1])
                and a.get("keepdims", 1)
            ):
                replaced[id(node)] = helper.make_node(
                    "GlobalAveragePool", [node.input[0]], list(node.output), name=f"{node.name or 'mean'}_gap"
                )
                counts["GlobalAveragePool"] += 1
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    return counts


def _live_taps(size: int, kernel: int, stride: int, begin: int, end: int) -> tuple[int, int, int, int] | None:
    """For one spatial axis of a convolution: the first and last kernel tap that ever reads a real input
    element, with the pads that keep the output size when the kernel is cut down to those taps
    (``(first, last, new_begin, new_end)``), or ``None`` when every tap is live or the cut is not expressible."""
    out = (size + begin + end - kernel) // stride + 1
    first = max(0, begin - (out - 1) * stride)
    last = min(kernel - 1, size - 1 + begin)
    if (first, last) == (0, kernel - 1) or last < first:
        return None
    cut = last - first + 1
    new_begin = begin - first
    new_end = (out - 1) * stride + cut - size - new_begin
    if new_end < 0 or (size + new_begin + new_end - cut) // stride + 1 != out:
        return None
    return first, last, new_begin, new_end


def crop_dead_taps(model: Any) -> int:
    """Cut conv kernels (in place) down to the taps that ever touch the input, not only its zero padding.

    A 7x7 depthwise conv with padding 3 on a 2x2 feature map reads real pixels with its central 3x3 taps
    only; the other 40 multiply padding. onnxruntime's int8 kernels compute every tap (its float NCHWc
    kernels mostly skip them), so the late stages of a small-resolution subnet spend most of their int8
    depthwise time on padding. Dropping those taps and shrinking the pads to match computes the same
    function: in float, and in integers too, where padding holds the input zero point and adds nothing.

    Works on float graphs (weights as initializers) and QDQ graphs (integer weights behind a
    ``DequantizeLinear``; the per-output-channel scales stay as they are). Needs static spatial input
    shapes (it runs ONNX shape inference). Returns the number of convs cut.
    """
    import onnx
    from onnx import helper, numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, list[int | None]] = {}
    for info in [*inferred.graph.value_info, *inferred.graph.input]:
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    cut = 0
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        a = _attrs(node)
        weight_name = node.input[1]
        dq = producer.get(weight_name)
        if dq is not None and dq.op_type == "DequantizeLinear" and readers.get(weight_name) == 1:
            weight_name = dq.input[0]
        weight = initializers.get(weight_name)
        size = shapes.get(node.input[0], [])[2:]
        if (
            weight is None
            or readers.get(weight_name) != 1
            or len(weight.dims) != 4
            or len(size) != 2
            or None in size
            or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
            or any(d != 1 for d in a.get("dilations", [1, 1]))
        ):
            continue
        kernel = list(weight.dims[2:])
        strides = list(a.get("strides", [1, 1]))
        pads = list(a.get("pads", [0, 0, 0, 0]))
        axes = [_live_taps(size[i], kernel[i], strides[i], pads[i], pads[i + 2]) for i in range(2)]
        if axes == [None, None]:
            continue
        w = numpy_helper.to_array(weight)
        for i, live in enumerate(axes):
            if live is None:
                continue
            first, last, pads[i], pads[i + 2] = live
            w = w.take(range(first, last + 1), axis=2 + i)
        weight.CopyFrom(numpy_helper.from_array(w.copy(), weight_name))
        kept = [x for x in node.attribute if x.name not in ("pads", "kernel_shape")]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.attribute.extend(
            [helper.make_attribute("kernel_shape", list(w.shape[2:])), helper.make_attribute("pads", pads)]
        )
        cut += 1
    return cut


def _crop_file(path: Path) -> int:
    """:func:`crop_dead_taps` on an ONNX file (rewritten only when a kernel was cut); returns the count."""
    import onnx

    model = onnx.load(str(path))
    cut = crop_dead_taps(model)
    if cut:
        onnx.save(model, str(path))
    return cut


def _scalar(initializers: Mapping[str, Any], name: str) -> Any:
    """The value of a one-element initializer, or ``None`` when ``name`` is not one."""
    from onnx import numpy_helper

    if name not in initializers:
        return None
    value = numpy_helper.to_array(initializers[name])
    return value.reshape(()) if value.size == 1 else None


def integer_hard_activations(model: Any) -> dict[str, int]:
    """Rewrite the float hard-sigmoid / h-swish islands of a QDQ int8 graph (in place) into integer ops.

    onnxruntime has no integer ``HardSigmoid`` / ``HardSwish``: quantized, each runs as
    ``DequantizeLinear -> HardSigmoid [-> Mul] -> QuantizeLinear`` in float (for the max ``small`` subnet
    about 3 ms of 20 at batch 32). Both are affine maps clipped to a range, and a ``QuantizeLinear`` clips by
    saturating, so with ``x`` held as ``q`` (scale ``s``, zero point ``z``):

    * ``hardsigmoid(x) = clip(x / 6 + 1/2, 0, 1)`` becomes ``DQ(q; s/6, z) + 1/2`` quantized by the existing
      output ``QuantizeLinear``. When that quantizer's range starts at 0 and ends at most half a step above 1
      (min/max calibration of a hard-sigmoid output gives that), saturation clips at the same points, so the
      result is the same but for how exact rounding ties come out (one step).
    * ``hardswish(x) = x * hardsigmoid(x)`` becomes ``DQ(q; s) * g`` with the gate ``g`` formed as above and
      quantized to 8 bits on ``[0, 1]`` (step 1/255; the only added rounding: at most ``|x| / 510``).

    onnxruntime fuses ``DQ -> Add/Mul -> Q`` into ``QLinearAdd`` / ``QLinearMul``. A node whose input is not a
    per-tensor ``DequantizeLinear`` or whose output does not go (only) to a ``QuantizeLinear`` is left as is.
    Returns how many nodes of each kind were rewritten (keys ``IntegerHardSigmoid``, ``IntegerHardSwish``).
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    counts = {"IntegerHardSigmoid": 0, "IntegerHardSwish": 0}
    new_initializers: dict[str, Any] = {}
    replacement: dict[int, list[Any]] = {}
    dropped: set[int] = set()

    def constant(name: str, value: Any) -> str:
        new_initializers.setdefault(name, numpy_helper.from_array(value, name))
        return name

    for node in graph.node:
        if node.op_type == "HardSigmoid":
            a = _attrs(node)
            if abs(a.get("alpha", 0.2) - 1 / 6) > 1e-6 or abs(a.get("beta", 0.5) - 0.5) > 1e-6:
                continue
        elif node.op_type != "HardSwish":
            continue
        dq = producer.get(node.input[0])
        users = consumers.get(node.output[0], [])
        if (
            dq is None
            or dq.op_type != "DequantizeLinear"
            or len(dq.input) < 3
            or node.output[0] in graph_outputs
            or len(users) != 1
            or users[0].op_type != "QuantizeLinear"
        ):
            continue
        scale, zero = _scalar(initializers, dq.input[1]), _scalar(initializers, dq.input[2])
        if scale is None or zero is None or zero.dtype not in (np.uint8, np.int8):
            continue
        act = zero.dtype.type
        lo = int(np.iinfo(act).min)
        if node.op_type == "HardSigmoid":
            q = users[0]
            if len(q.input) < 3:
                continue
            out_scale, out_zero = _scalar(initializers, q.input[1]), _scalar(initializers, q.input[2])
            if out_scale is None or out_zero is None or int(out_zero) != lo:
                continue
            if (int(np.iinfo(act).max) - lo - 0.5) * float(out_scale) > 1.0:
                continue  # the quantizer's range reaches past 1: saturation would not clip where min(., 1) does
        tag = f"{node.name or node.output[0]}_int"
        sixth = constant(f"{tag}_scale_sixth", np.asarray(scale / np.float32(6), dtype=np.float32))
        half = [
            constant(f"int8_half_{act.__name__}", np.asarray(1, dtype=act)),
            constant("int8_half_scale", np.asarray(0.5, dtype=np.float32)),
            constant(f"int8_zero_{act.__name__}", np.asarray(0, dtype=act)),
        ]
        nodes = [
            helper.make_node(
                "DequantizeLinear", [dq.input[0], sixth, dq.input[2]], [f"{tag}_x6"], name=f"{tag}_dq6"
            ),
            helper.make_node("DequantizeLinear", half, [f"{tag}_half"], name=f"{tag}_dq_half"),
        ]
        if node.op_type == "HardSigmoid":
            nodes.append(
                helper.make_node("Add", [f"{tag}_x6", f"{tag}_half"], list(node.output), name=f"{tag}_add")
            )
            if len(consumers.get(dq.output[0], [])) == 1 and dq.output[0] not in graph_outputs:
                dropped.add(id(dq))  # its only reader was this node
        else:
            gate_q = [
                constant("int8_gate_scale", np.asarray(1 / 255, dtype=np.float32)),
                constant(f"int8_gate_zero_{act.__name__}", np.asarray(lo, dtype=act)),
            ]
            nodes += [
                helper.make_node("Add", [f"{tag}_x6", f"{tag}_half"], [f"{tag}_pre"], name=f"{tag}_add"),
                helper.make_node(
                    "QuantizeLinear", [f"{tag}_pre", *gate_q], [f"{tag}_gq"], name=f"{tag}_q_gate"
                ),
                helper.make_node(
                    "DequantizeLinear", [f"{tag}_gq", *gate_q], [f"{tag}_g"], name=f"{tag}_dq_gate"
                ),
                helper.make_node("Mul", [dq.output[0], f"{tag}_g"], list(node.output), name=f"{tag}_mul"),
            ]
        replacement[id(node)] = nodes
        counts[f"Integer{node.op_type}"] += 1
    rebuilt = []
    for node in graph.node:
        if id(node) not in dropped:
            rebuilt.extend(replacement.get(id(node), [node]))
    del graph.node[:]
    graph.node.extend(rebuilt)
    graph.initializer.extend(new_initializers.values())
    return counts


INT8_QUANTIZE = ("auto", "all", "weights")
# Ops with a weight that "weights" quantizes; the rest of the graph stays float.
_WEIGHT_OPS = ("Conv", "Gemm", "MatMul")


def _constant_tensors(graph: Any) -> set[str]:
    """Names of the tensors of ``graph`` that do not depend on its inputs: initializers, and the outputs of
    nodes that read only those (``Constant``, a ``Transpose`` of a weight, ...). Nodes are in topological
    order, as ONNX requires."""
    names = {i.name for i in graph.initializer}
    for node in graph.node:
        if all(not name or name in names for name in node.input):
            names.update(node.output)
    return names


def activation_products(model: Any) -> list[Any]:
    """The ``MatMul`` / ``Gemm`` / ``Einsum`` nodes of an ONNX model that multiply two activations (attention's
    ``q k^T`` and ``scores @ v``), not an activation by a weight.

    Example:
        >>> from onnx import TensorProto, helper
        >>> graph = helper.make_graph(
        ...     [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj"),
        ...      helper.make_node("MatMul", ["y", "x"], ["z"], name="scores")],
        ...     "g",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        ...     [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 2])],
        ...     [helper.make_tensor("w", TensorProto.FLOAT, [2, 2], [1.0, 0.0, 0.0, 1.0])],
        ... )
        >>> [n.name for n in activation_products(helper.make_model(graph))]
        ['scores']
    """
    constants = _constant_tensors(model.graph)
    return [
        n
        for n in model.graph.node
        if n.op_type in ("MatMul", "Gemm", "Einsum")
        and sum(1 for name in n.input[:2] if name and name not in constants) == 2
    ]


def has_attention(model: Any) -> bool:
    """Whether an ONNX model computes attention, i.e. multiplies two activations (:func:`activation_products`).

    A ``Softmax`` alone does not count: a classifier may end in one.
    """
    return bool(activation_products(model))


def int8_choice(model: nn.Module, sample: torch.Tensor, quantize: str = "auto") -> str:
    """What :func:`export_onnx_int8` quantizes in ``model`` with ``quantize``: ``all`` or ``weights``.

    ``auto`` is resolved as the export resolves it (a float ONNX graph of ``model`` on ``sample`` is written to a
    temporary file and checked by :func:`has_attention`); a profile records the answer, so that latencies of
    graphs quantized differently never share one.
    """
    if quantize not in INT8_QUANTIZE:
        raise ValueError(f"quantize={quantize!r} is not one of {', '.join(INT8_QUANTIZE)}")
    if quantize != "auto":
        return quantize
    import onnx

    with tempfile.TemporaryDirectory(prefix="nas-int8-") as work:
        path = Path(work) / "float.onnx"
        _write_onnx(_without_act_quant(model), sample, path)
        return "weights" if has_attention(onnx.load(str(path))) else "all"


def _name_nodes(graph: Any) -> None:
    """Give every nameless node a unique name: ``quantize_static`` excludes nodes by name."""
    used = {n.name for n in graph.node}
    for i, node in enumerate(graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def _int8_selection(model: Any, quantize: str) -> tuple[str, dict[str, Any]]:
    """The resolved ``quantize`` choice (``all`` or ``weights``) and the ``quantize_static`` keyword arguments
    that select what it quantizes in ``model`` (whose nameless nodes get names for ``weights``)."""
    if quantize == "auto":
        quantize = "weights" if has_attention(model) else "all"
    if quantize == "all":
        # Layer norms stay float: onnxruntime has no integer kernel for them, and per-channel quantization of
        # their 1-D scale and shift fails ("Axis 1 is out-of-range", one warning per norm) to per-tensor.
        layer_norms = [n.name for n in model.graph.node if n.op_type == "LayerNormalization"]
        return quantize, {"nodes_to_exclude": layer_norms}
    _name_nodes(model.graph)
    # Float outputs: onnxruntime then fuses DequantizeLinear -> MatMul (+ bias Add) into one
    # MatMulIntegerToFloat (and a Gemm into a float-output QGemm) instead of requantizing every projection's
    # output for the float ops after it, and the residual stream keeps the patch embedding in float (measured
    # on vit: 2-4x less logit error than a requantized patch-conv output, at the same speed).
    return quantize, {
        "op_types_to_quantize": list(_WEIGHT_OPS),
        "nodes_to_exclude": [n.name for n in activation_products(model)],
        "extra_options": {"OpTypesToExcludeOutputQuantization": list(_WEIGHT_OPS)},
    }


def export_onnx_int8(
    model: nn.Module,
    path: Path,
    calib_inputs: torch.Tensor,
    batch: int = 8,
    eval_inputs: torch.Tensor | None = None,
    quantize: str = "auto",
) -> dict[str, Any]:
    """Write an int8 ONNX model in QDQ form that onnxruntime runs with integer kernels.

    The float graph (activation fake-quantizers removed, weights as the fake-quantized model holds them) is
    exported, pre-processed by onnxruntime (shape inference, Conv+BN folding), rewritten by
    :func:`fuse_for_int8` (h-swish as ``HardSwish``, SE pooling as ``GlobalAveragePool``) and statically
    quantized: int8 per-channel symmetric weights (zero point 0, which selects onnxruntime's symmetric conv
    kernels), uint8 activations calibrated (min/max) on ``calib_inputs``. What gets quantized (``quantize``):

    * ``all``: every op type onnxruntime's quantizer knows but layer norms. The QDQ graph is then rewritten by
      :func:`integer_hard_activations` (h-swish and SE gates as integer Add / Mul instead of float islands)
      and :func:`crop_dead_taps` (kernel taps that only ever read padding removed), so that conv networks run
      faster than the float export on onnxruntime's CPU kernels, whose int8 depthwise convs are slower than
      the float ones.
    * ``weights``: only Conv / Gemm / MatMul with a weight (int8 weights, uint8 inputs, float outputs, which
      onnxruntime runs as ``MatMulIntegerToFloat``); attention's products of two activations, softmax, GELU,
      layer norms and residual adds stay float. Quantizing everything in a ViT requantizes each of those:
      on vit ``small`` subnets (onnxruntime 1.32, 1 thread, batch 1 and 32) ``all`` took 1.1-1.7x the float
      time with 0.3-1% mean logit error (1 - cosine) on MNIST, ``weights`` 0.87-1.2x with 0.011-0.017%
      (1.2x only for 48-wide subnets; the 224 px ``tiny`` max subnet: 0.59x, ``all`` 0.74x). Quantizing the
      two products as well was about as fast and less exact (``benchmarks/vit_int8.py``, docs/spaces.md).
    * ``auto`` (default): ``weights`` for a graph with attention (:func:`has_attention`: a product of two
      activations), else ``all`` (the conv spaces).

    Returns how close the int8 model is to ``model`` on ``eval_inputs`` (default: ``calib_inputs``; pass
    held-out inputs for an unbiased figure): mean logit cosine similarity, top-1 agreement and max abs
    difference; and the choice applied (``int8_quantize``: ``all`` or ``weights``).
    """
    if quantize not in INT8_QUANTIZE:
        raise ValueError(f"quantize={quantize!r} is not one of {', '.join(INT8_QUANTIZE)}")
    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(
                [{"input": calib_inputs[i : i + batch].numpy()} for i in range(0, len(calib_inputs), batch)]
            )

        def get_next(self) -> dict[str, Any] | None:
            return next(self._batches, None)

    with tempfile.TemporaryDirectory(dir=path.parent) as work:
        float_path, prep_path = Path(work) / "float.onnx", Path(work) / "prep.onnx"
        _write_onnx(_without_act_quant(model), calib_inputs[:2], float_path)
        quant_pre_process(str(float_path), str(prep_path))
        # After pre-processing: its onnxruntime pass expands HardSwish back into HardSigmoid + Mul.
        prepared = onnx.load(str(prep_path))
        rewrites = fuse_for_int8(prepared)
        quantize, selection = _int8_selection(prepared, quantize)
        onnx.save(prepared, str(prep_path))
        quantize_static(
            str(prep_path),
            str(path),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            **selection,
        )
        quantized = onnx.load(str(path))
        rewrites.update(integer_hard_activations(quantized))
        rewrites["DeadTapCrop"] = crop_dead_taps(quantized)  # on the integer weights: their scales stay
        onnx.save(quantized, str(path))
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = calib_inputs if eval_inputs is None else eval_inputs
    with torch.no_grad():
        expected = torch.cat([model(part) for part in inputs.split(256)]).numpy()
    got = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]
    cosine = (expected * got).sum(1) / (
        np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1) + 1e-12
    )
    return {
        "int8_cosine_similarity": float(cosine.mean()),
        "int8_top1_agreement": float((expected.argmax(1) == got.argmax(1)).mean()),
        "int8_max_abs_diff": float(abs(expected - got).max()),
        "int8_samples": len(inputs),
        "int8_calibration_samples": len(calib_inputs),
        "int8_quantize": quantize,
        "int8_graph_rewrites": rewrites,
    }


def _check_onnx(
    path: Path,
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    diff: float,
    scale: float,
    tolerance: float | None,
) -> dict[str, Any]:
    """Check the ONNX file at ``path`` (``diff``: its max difference to ``model``, at output scale ``scale``)
    and return what to add to the manifest's verification.

    A float subnet is checked on ``diff``. A subnet with 8-bit activation fake-quantizers is checked with
    rounding removed on both sides (``onnx_max_abs_diff_unrounded``), see :class:`_UnroundedActQuant`; when
    the graph holds more ``Round`` nodes than the model quantizers (rounding ops of the model's own), that is
    not possible and nothing is checked (``onnx_unchecked`` says why).
    """
    quantizers = sum(isinstance(m, static.ActQuant) for m in model.modules())
    if not quantizers:
        _check_close("onnx", diff, scale, tolerance)
        return {}
    unrounded = _onnx_without_rounding(path, quantizers)
    if unrounded is None:
        return {
            "onnx_unchecked": "the graph holds more Round nodes than the model has activation quantizers, so "
            "rounding cannot be removed to compare without rounding ties"
        }
    diff, scale = _max_abs_diff(
        _onnx_runner(unrounded), _replace_act_quant(model, _UnroundedActQuant), inputs
    )
    _check_close("onnx", diff, scale, tolerance, how=" with activation rounding removed on both sides")
    return {"onnx_max_abs_diff_unrounded": diff}


def check_semi_structured(model: nn.Module, sample: torch.Tensor) -> dict[str, Any] | None:
    """Which layers of ``model`` can run as 2:4 semi-structured sparse matmuls, and how they run (manifest entry).

    ``None`` when no layer follows 2:4. Otherwise ``eligible`` lists them; on a CUDA GPU with sparse tensor
    cores (compute capability 8.0+) the model is also converted (:func:`nas.semi_structured.to_semi_structured`,
    float16) and ``layers`` says per layer whether it runs sparse, with ``max_abs_diff`` to the dense float16
    model on ``sample``, and ``latency_ms`` / ``cuda_graph_latency_ms`` time the dense float16 and the 2:4 model
    on ``sample`` run eagerly and replayed as CUDA graphs (:class:`nas.semi_structured.CudaGraph`; eager 2:4
    layers pay a fixed host cost per call, see :mod:`nas.semi_structured`). Without such a GPU ``cuda`` is
    ``False`` and the exported files stay dense (with zeros).
    """
    eligible = [name for name, _ in semi_structured.eligible_layers(model)]
    if not eligible:
        return None
    entry: dict[str, Any] = {"eligible": eligible, "cuda": semi_structured.cuda_supports_2to4()}
    if entry["cuda"]:
        fast, report = semi_structured.to_semi_structured(model)
        dense = copy.deepcopy(model).to(device="cuda", dtype=torch.float16).eval()
        x = sample.to(device="cuda", dtype=torch.float16)
        with torch.no_grad():
            entry["max_abs_diff"] = float((fast(x).float() - dense(x).float()).abs().max())
        entry["layers"] = report
        entry["device"] = torch.cuda.get_device_name()
        timed = semi_structured.latency_ms
        entry["latency_ms"] = {"dense": round(timed(dense, x), 4), "2:4": round(timed(fast, x), 4)}
        try:
            graphs = {"dense": semi_structured.CudaGraph(dense, x), "2:4": semi_structured.CudaGraph(fast, x)}
            entry["cuda_graph_latency_ms"] = {name: round(timed(g, x), 4) for name, g in graphs.items()}
        except RuntimeError as exc:  # a torch or cuSPARSELt build whose kernels cannot be captured
            entry["cuda_graph_latency_ms"] = f"capture failed: {exc}"
    return entry


def measured_density(model: nn.Module) -> dict[str, float]:
    """Fraction of non-zero weights of every conv / linear layer that has zeros (module path -> density)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            w = module.weight.detach()
            density = float(torch.count_nonzero(w)) / w.numel()
            if density < 1.0:
                out[name] = round(density, 6)
    return out


def export(
    net: Supernet,
    cfg: Mapping[str, Any],
    out_dir: str | os.PathLike,
    formats: Sequence[str] = DEFAULT_FORMATS,
    sample_input: torch.Tensor | None = None,
    overwrite: bool = True,
    calib_data: torch.Tensor | None = None,
    eval_data: torch.Tensor | None = None,
    bn_calib_data: Any = None,
    bn_calib_batches: int | None = None,
    bn_calib_batch_size: int | None = None,
    verify_tolerance: float | None = DEFAULT_VERIFY_TOLERANCE,
) -> Path:
    """Write subnet ``cfg`` of ``net`` to ``out_dir`` and return its path.

    Args:
        net: the supernet.
        cfg: the subnet (validated and made canonical).
        out_dir: target directory. An existing previous export there is replaced atomically (with
            ``overwrite=True``); a non-empty directory without a manifest is never replaced.
        formats: any of ``"safetensors"`` (always written: ``load_exported`` needs it), ``"torchscript"``
            (opt-in: ``torch.jit.trace`` is deprecated in torch 2.13), ``"onnx"`` (float, verified in
            onnxruntime) and ``"onnx-int8"`` (QDQ int8, see :func:`export_onnx_int8`). Default: safetensors +
            ONNX, as ``nas export``.
        sample_input: a batch to trace and verify with (default: two random inputs of the subnet's shape).
        calib_data: inputs (already at the subnet's resolution) that calibrate the int8 activations and
            measure int8-vs-fake-quant agreement (default: 64 random inputs; pass real data for meaningful
            agreement figures).
        eval_data: held-out inputs to measure the agreement on instead of ``calib_data``.
        bn_calib_data: images (a tensor, a ``TensorDataset`` or an ``(images, labels)`` pair, any resolution)
            to re-estimate the subnet's batch-norm statistics (and activation observers) on before it is
            extracted, exactly as :func:`nas.evaluation.evaluate_subnet` does (``bn_calib_batches`` x
            ``bn_calib_batch_size`` images, default 8 x 256). Pass the calibration images the search's accuracy
            objective used, so that the exported model is the one whose accuracy was measured: the supernet's
            own running statistics mix every subnet it trained and fit none. ``net`` is left as it was.
            Without it the supernet's running statistics are exported as they are.
        verify_tolerance: how far the TorchScript and ONNX files may be from the model: each is loaded back
            and run on ``sample_input`` and its first image, and an output further than
            ``verify_tolerance x max|model output| + 1e-6`` from the model's raises :class:`ExportError` and
            writes nothing (default 1e-4: correct exports measure about 1e-6 on ONNX and 0 on TorchScript).
            ``None`` skips the check; the differences are recorded in the manifest's ``verification`` either
            way, with the tolerance. For a subnet with 8-bit activations, the ONNX check runs the file with its
            ``Round`` nodes made identities against the model with its quantizers not rounding either (the
            file as written is also compared and recorded, not checked: a float rounding tie can flip one
            quantization step in onnxruntime but not in torch, and that moves the logits by up to a few
            percent). The int8 ONNX is approximate by design: its agreement with the model is recorded, not
            checked.

    Example:
        >>> # export(net, cfg, "model/", formats=("safetensors", "onnx"))  -> Path("model")
    """
    from safetensors.torch import save_file

    from nas import metrics

    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"export: unknown format(s) {unknown}; choose from {list(FORMATS)}")
    if verify_tolerance is not None and not float(verify_tolerance) >= 0:
        raise ValueError(
            f"export: verify_tolerance={verify_tolerance!r} must be >= 0 (or None to skip the check)"
        )
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not _is_previous_export(out))):
        raise ExportError(
            f"export: {out} exists and is not a previous export; refusing to replace it (choose a new or empty "
            "output directory)"
        )
    if out.exists() and not overwrite:
        raise ExportError(f"export: {out} exists; pass overwrite=True to replace it")
    canonical = net.space.canonical(cfg)
    bn_images = None if bn_calib_data is None else _images(bn_calib_data, "bn_calib_data")
    model, bn_used = _extract(net, canonical, bn_images, bn_calib_batches, bn_calib_batch_size)
    if not hasattr(model, "architecture"):  # a supernet of the user's whose extract() skipped static.finalize
        try:
            static.finalize(model)
        except TypeError as exc:  # a layer type without a codec: named, with the two ways out
            raise ExportError(
                f"export: the subnet {canonical.to_json()} of {type(net).__name__}: {exc}"
            ) from None
    shape = net.input_shape(canonical, batch_size=2)
    if sample_input is None:
        generator = torch.Generator().manual_seed(0)
        sample_input = torch.randn(*shape, generator=generator)
    sample_input = sample_input.detach().cpu().float()
    if tuple(sample_input.shape[1:]) != tuple(shape[1:]):
        raise ValueError(
            f"export: sample_input has shape {tuple(sample_input.shape)}; expected (B, *{shape[1:]})"
        )

    out.parent.mkdir(parents=True, exist_ok=True)
    # Exports of this folder killed before their rename (kill -9, the OOM killer) left a whole model each.
    remove_stale_temps(out)
    if (
        out.exists()
    ):  # an old export moved aside and not yet deleted; while `out` is missing it is the only copy
        remove_stale_temps(out, kind="old")
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out), dir=out.parent))
    try:
        files: dict[str, str] = {}
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"config": canonical.to_json()})
        files[WEIGHTS] = "safetensors"
        extra: dict[str, Any] = {}
        if {"torchscript", "onnx"} & set(formats):
            extra["verify_tolerance"] = verify_tolerance
            extra["verify_atol"] = VERIFY_ATOL
        inputs = [sample_input, sample_input[:1]]
        if "torchscript" in formats:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(model, sample_input)
            traced.save(str(tmp / TORCHSCRIPT))
            files[TORCHSCRIPT] = "torchscript"
            # the file as a user loads it (our own file, just written: torch.jit.load runs no foreign code)
            diff, scale = _max_abs_diff(torch.jit.load(str(tmp / TORCHSCRIPT)), model, inputs)
            extra["torchscript_max_abs_diff"] = diff
            extra["output_max_abs"] = scale  # what the tolerance is relative to
            _check_close("torchscript", diff, scale, verify_tolerance)
        if "onnx" in formats:
            _write_onnx(model, sample_input, tmp / ONNX)
            extra["onnx_dead_taps_cut"] = _crop_file(tmp / ONNX)
            extra["onnx_max_abs_diff"], scale = _max_abs_diff(_onnx_runner(tmp / ONNX), model, inputs)
            extra["output_max_abs"] = scale
            extra.update(
                _check_onnx(tmp / ONNX, model, inputs, extra["onnx_max_abs_diff"], scale, verify_tolerance)
            )
            files[ONNX] = "onnx"
        if "onnx-int8" in formats:
            if calib_data is None:
                calib_data = torch.randn(64, *shape[1:], generator=torch.Generator().manual_seed(1))
            calib = calib_data.detach().cpu().float()
            held_out = None if eval_data is None else eval_data.detach().cpu().float()
            extra.update(export_onnx_int8(model, tmp / ONNX_INT8, calib, eval_inputs=held_out))
            files[ONNX_INT8] = "onnx-int8"
        sparse_2to4 = check_semi_structured(model, sample_input)
        if sparse_2to4 is not None:
            extra["semi_structured_2to4"] = sparse_2to4
        manifest = {
            "format_version": MANIFEST_VERSION,
            "space": net.space.name,
            "supernet": type(net).__name__,
            "config": dict(canonical),
            "config_json": canonical.to_json(),
            "key": canonical.key,
            "input_shape": list(net.input_shape(canonical, batch_size=1)),
            "architecture": model.architecture,
            "metrics": {
                "macs": metrics.macs(net, canonical),
                "params": metrics.params(net, canonical),
                "bytes": metrics.model_bytes(net, canonical),
            },
            "verification": extra,
            # images the batch-norm statistics were re-estimated on for this subnet (None: the supernet's own)
            "bn_recalibration": None if bn_used is None else {"images": bn_used},
            "measured_density": measured_density(model),
            "versions": _versions(),
            "files": {
                name: {"format": fmt, "sha256": _sha256(tmp / name), "bytes": (tmp / name).stat().st_size}
                for name, fmt in files.items()
            },
        }
        with open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        give_default_permissions(tmp)  # mkdtemp made it 0700
        _fsync_files(tmp)  # on disk before the rename makes them the export: a crash never leaves a torn one
        _swap_into_place(tmp, out)
        _fsync_dir(out.parent)  # the rename itself
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _is_previous_export(out: Path) -> bool:
    """Whether directory ``out`` is what :func:`export` writes: a manifest of an export and only the files it
    lists. Any ``manifest.json`` is not enough: replacing ``out`` deletes everything in it."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return False
    if not {"format_version", "config_json", "architecture"} <= manifest.keys():
        return False
    return {p.name for p in out.iterdir()} <= {MANIFEST, *manifest["files"]}


def _images(data: Any, what: str) -> torch.Tensor:
    """The images of a ``(N, C, H, W)`` tensor, a ``TensorDataset`` or an ``(images, labels)`` pair."""
    from nas.evaluation import _tensors, check_images_and_labels

    if torch.is_tensor(data):
        return check_images_and_labels(data, torch.zeros(len(data), dtype=torch.long), what)[0]
    return _tensors(data, what, labels=False)[0]


def _extract(
    net: Supernet,
    cfg: Any,
    bn_images: torch.Tensor | None,
    batches: int | None,
    batch_size: int | None,
) -> tuple[nn.Module, int | None]:
    """The static subnet (eval mode, CPU), with its batch norm re-estimated on ``bn_images`` when given, and
    how many images that used. The supernet's buffers, mode and active config are restored afterwards."""
    from nas import evaluation

    if bn_images is None:
        return net.extract(cfg).eval().cpu(), None
    device = evaluation.device_of(net)
    bn_images = bn_images.to(device)
    previous = getattr(net, "active_config", None)
    momenta = [(m, m.momentum) for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with evaluation.bn_calibration(net):
        try:
            active = net.activate(cfg)
            used = evaluation.recalibrate_bn(
                net,
                bn_images,
                active,
                evaluation.CALIB_BATCHES if batches is None else batches,
                evaluation.CALIB_BATCH_SIZE if batch_size is None else batch_size,
            )
            for m, momentum in momenta:  # recalibration set None (cumulative); the model keeps the usual one
                m.momentum = momentum
            model = net.extract(active).eval().cpu()
        finally:
            if previous is not None:
                net.activate(previous)
    return model, used


def _fsync_dir(path: Path) -> None:
    """Flush a directory's entries (renames into it) to disk; a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def _fsync_files(directory: Path) -> None:
    """Flush every file in ``directory`` (safetensors, TorchScript and ONNX writers do not) and the directory."""
    for path in directory.iterdir():
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(directory)


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an old export at ``out`` is moved aside first and removed after."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=temp_prefix(out, kind="old"), dir=out.parent))
        os.rmdir(old)
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``manifest.json`` of an export, with a clear error when it is missing, broken, of another
    format version, or lacks what :func:`load_exported` reads."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise ExportError(f"{out_dir}: no {MANIFEST}; is this a directory written by nas.export?")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path}: manifest is not valid JSON ({exc}); re-export the subnet") from None
    if not isinstance(manifest, dict):
        raise ExportError(
            f"{path}: manifest is a JSON {type(manifest).__name__}, not an object; is this a directory written "
            "by nas.export?"
        )
    for key in ("architecture", "files", "config_json"):
        if key not in manifest:
            raise ExportError(f"{path}: manifest lacks {key!r}")
    # A manifest of another format version may mean something else by the same keys: refuse it by name.
    if manifest.get("format_version") != MANIFEST_VERSION:
        raise ExportError(
            f"{path}: manifest format_version {manifest.get('format_version')!r} is not supported (this version "
            f"of nas reads {MANIFEST_VERSION}); load it with the nas version that wrote it (manifest 'versions') "
            "or re-export the subnet with this one"
        )
    files = manifest["files"]
    if not isinstance(files, dict) or not all(
        isinstance(info, dict) and isinstance(info.get("sha256"), str) for info in files.values()
    ):
        raise ExportError(
            f"{path}: manifest 'files' must map each file name to an object with its 'sha256'; re-export the subnet"
        )
    # Only plain names: a manifest must not make us read (hash) files outside its directory.
    outside = [name for name in files if Path(name).name != name or name in (".", "..")]
    if outside:
        raise ExportError(
            f"{path}: manifest lists files outside the export directory ({', '.join(map(repr, outside))}); "
            "an export lists plain file names only: re-export the subnet"
        )
    if not isinstance(manifest["architecture"], dict):
        raise ExportError(f"{path}: manifest 'architecture' is not an object; re-export the subnet")
    return manifest


def verify_files(out_dir: str | os.PathLike, manifest: Mapping[str, Any] | None = None) -> None:
    """Check that every file the manifest lists exists and has the recorded SHA-256."""
    out = Path(out_dir)
    manifest = read_manifest(out) if manifest is None else manifest
    for name, info in manifest["files"].items():
        path = out / name
        if not path.is_file():
            raise ExportError(f"{out}: {name} is listed in the manifest but missing; re-export the subnet")
        digest = _sha256(path)
        if digest != info["sha256"]:
            raise ExportError(
                f"{path}: SHA-256 {digest[:12]}... does not match the manifest ({info['sha256'][:12]}...): the "
                "file was changed or cut short after export; copy it again or re-export the subnet"
            )


def load_exported(out_dir: str | os.PathLike) -> nn.Module:
    """Rebuild an exported subnet (eval mode) from its manifest and safetensors weights.

    Raises :class:`ExportError` when a file is missing, corrupt (SHA-256 mismatch) or does not fit the
    architecture.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    out = Path(out_dir)
    manifest = read_manifest(out)
    verify_files(out, manifest)
    if WEIGHTS not in manifest["files"]:
        raise ExportError(f"{out}: the manifest lists no {WEIGHTS}")
    architecture = manifest["architecture"]
    try:
        # On the meta device first: no memory is allocated until the architecture's tensor shapes are known
        # to be those of the weights (a manifest naming a huge layer would otherwise allocate it first).
        with torch.device("meta"):
            skeleton: nn.Module | None = static.build(architecture)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"{out}: cannot rebuild the architecture: {exc}") from exc
    except (RuntimeError, NotImplementedError):  # a registered layer type whose constructor needs real data
        skeleton = None
    weights = out / WEIGHTS
    try:
        with safe_open(str(weights), framework="pt") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (no __iter__)
    except (SafetensorError, OSError) as exc:
        raise ExportError(
            f"{weights}: not a readable safetensors file ({exc}); copy it again or re-export the subnet"
        ) from None
    _check_shapes(out, stored, skeleton)
    try:
        model = static.build(architecture)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ExportError(f"{out}: cannot rebuild the architecture: {exc}") from exc
    if skeleton is None:
        _check_shapes(out, stored, model)
    state = load_file(str(weights))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ExportError(f"{out}: weights do not fit the architecture: {exc}") from exc
    model.config_json = manifest["config_json"]
    return model.eval()


def _check_shapes(out: Path, stored: Mapping[str, tuple[int, ...]], model: nn.Module | None) -> None:
    """Raise :class:`ExportError` unless ``model``'s state dict has exactly the tensor names and shapes
    ``stored`` (those of the safetensors file); ``None``: nothing to check yet."""
    if model is None:
        return
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if stored != expected:
        wrong = sorted(k for k in expected.keys() & stored.keys() if expected[k] != stored[k])
        raise ExportError(
            f"{out}: weights do not fit the architecture: missing {sorted(expected.keys() - stored.keys())[:5]}, "
            f"unexpected {sorted(stored.keys() - expected.keys())[:5]}, other shape {wrong[:5]}; the manifest "
            f"and {WEIGHTS} come from different exports: re-export the subnet"
        )


class _CallableModule(types.ModuleType):
    """``nas.export`` is both this module and the function :func:`export`: importing the submodule makes Python
    bind ``nas.export`` to the module, so the module itself must be callable for ``nas.export(net, cfg, out)``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Path:
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
