"""Run 2:4-sparse layers of an exported subnet on NVIDIA sparse tensor cores.

A layer whose sparsity policy is ``"2:4"`` keeps two of every four consecutive weights along the input
dimension of each output channel (:func:`nas.ops.sparse.sparsity_mask`). That is the layout of
``torch.sparse.to_sparse_semi_structured``, which stores half the values plus index metadata and multiplies
with cuSPARSELt or CUTLASS kernels on GPUs of compute capability 8.0 or newer. It only covers matrix
products, so the eligible layers are ``nn.Linear`` and pointwise (1x1, stride 1, ungrouped, unpadded)
``nn.Conv2d``; the latter run as a linear map over the channels of every pixel. Depthwise and k x k convs
keep their zeros but stay dense.

Measure before relying on it. In eager mode every 2:4 matmul pays a fixed host cost: with torch 2.11 on an
H200, ``torch._cslt_sparse_mm`` spends about 1.2 ms of CPU time per call (host work inside the op, likely
cuSPARSELt's plan set-up) around a GPU kernel of 20 us that the dense one takes 35 us for (12,608 x 240 x 960, float16), so a ViT-Ti
with 56 such layers ran 12x slower than dense at batch 1. Replayed as a CUDA graph (:class:`CudaGraph`) only
the kernels run, yet there it was still 0.55-0.86x dense at batch 1-1,024: at these widths the sparse kernels
(and whatever layout work torch does around them) cost more than they save (a single 2:4 matmul broke even at
16,384 x 8,192 x 8,192). :func:`latency_ms` times either way; ``nas export`` records both for its model
(``benchmarks/gpu_paths.py`` for the numbers above).

Example:
    >>> import torch
    >>> from torch import nn
    >>> layer = nn.Linear(8, 4)
    >>> with torch.no_grad():
    ...     _ = layer.weight.mul_(torch.tensor([1.0, 1.0, 0.0, 0.0]).repeat(4, 2))
    >>> is_2to4(layer.weight)
    True
    >>> [name for name, _ in eligible_layers(nn.Sequential(layer))]
    ['0']
    >>> # on a CUDA GPU: fast, skipped = to_semi_structured(model)  (see the function)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CudaGraph",
    "SemiStructuredLinear",
    "cuda_supports_2to4",
    "eligible_layers",
    "is_2to4",
    "latency_ms",
    "to_semi_structured",
]


def is_2to4(weight: torch.Tensor) -> bool:
    """Whether every group of 4 consecutive weights along each output channel's flattened inputs has >= 2 zeros."""
    if weight.dim() < 2 or weight[0].numel() % 4:
        return False
    groups = weight.detach().reshape(weight.shape[0], -1, 4)
    return bool(((groups == 0).sum(-1) >= 2).all())


def _is_pointwise(m: nn.Conv2d) -> bool:
    return (
        m.kernel_size == (1, 1)
        and m.stride == (1, 1)
        and m.groups == 1
        and m.dilation == (1, 1)
        and m.padding in ((0, 0), "valid")
    )


def eligible_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` of every ``nn.Linear`` and pointwise ``nn.Conv2d`` whose weight follows 2:4."""
    for name, m in model.named_modules():
        matmul = isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and _is_pointwise(m))
        if matmul and is_2to4(m.weight):
            yield name, m


class SemiStructuredLinear(nn.Module):
    """A linear map with a semi-structured sparse weight; a pointwise conv when ``pointwise`` is set.

    Args:
        weight: the compressed weight, ``(out, in)`` (what ``to_sparse_semi_structured`` returns).
        bias: optional ``(out,)`` bias.
        pointwise: inputs are ``(N, C, H, W)`` feature maps: each pixel's channels are multiplied.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, pointwise: bool):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.pointwise = pointwise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pointwise:
            return F.linear(x, self.weight, self.bias)
        n, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c).contiguous()
        out = F.linear(rows, self.weight, self.bias)
        return out.reshape(n, h, w, -1).permute(0, 3, 1, 2)


def cuda_supports_2to4() -> bool:
    """A CUDA GPU with sparse tensor cores (compute capability 8.0+) is present."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


def _shape_limits(dtype: torch.dtype) -> tuple[int, int]:
    """``(rows, cols)`` the weight's shape must be a multiple of for the backend torch will pick."""
    from torch.sparse import SparseSemiStructuredTensor
    from torch.sparse.semi_structured import (
        SparseSemiStructuredTensorCUSPARSELT,
        SparseSemiStructuredTensorCUTLASS,
    )

    backend = (
        SparseSemiStructuredTensorCUTLASS
        if SparseSemiStructuredTensor._FORCE_CUTLASS
        else SparseSemiStructuredTensorCUSPARSELT
    )
    limits = backend._DTYPE_SHAPE_CONSTRAINTS.get(dtype)
    if limits is None or dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"2:4 sparse kernels do not support {dtype}; use torch.float16 or torch.bfloat16")
    return limits.sparse_min_rows, limits.sparse_min_cols


def to_semi_structured(
    model: nn.Module,
    dtype: torch.dtype = torch.float16,
    device: str | torch.device = "cuda",
    convert: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[nn.Module, dict[str, str]]:
    """A copy of ``model`` on ``device`` in ``dtype`` whose 2:4 layers multiply with semi-structured weights.

    Returns the model and, per eligible layer (see :func:`eligible_layers`), ``"2:4"`` when it was converted or
    why it was not (a weight shape the kernels cannot take). ``convert`` replaces
    ``torch.sparse.to_sparse_semi_structured`` (tests pass a dense stand-in to check the wiring on a CPU).

    Raises ``RuntimeError`` without a CUDA GPU of compute capability 8.0+ (unless ``convert`` is given).

    Example:
        >>> # fast, report = to_semi_structured(load_exported("model/"))
        >>> # with torch.no_grad(): logits = fast(x.cuda().half())
    """
    if convert is None:
        if not cuda_supports_2to4():
            found = (
                f"a GPU of compute capability {'.'.join(map(str, torch.cuda.get_device_capability()))}"
                if torch.cuda.is_available()
                else "no CUDA GPU"
            )
            raise RuntimeError(
                f"2:4 semi-structured sparsity needs an NVIDIA GPU of compute capability 8.0+ (Ampere or newer); "
                f"found {found}. Run the dense exported model instead (its zeros are kept)."
            )
        from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

        if not torch.backends.cusparselt.is_available():
            # torch picks its backend from this class flag alone; builds without cuSPARSELt need CUTLASS
            SparseSemiStructuredTensor._FORCE_CUTLASS = True
        convert = to_sparse_semi_structured
    min_rows, min_cols = _shape_limits(dtype)
    fast = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    report: dict[str, str] = {}
    for name, module in list(eligible_layers(fast)):
        out_features, in_features = module.weight.shape[0], module.weight[0].numel()
        if out_features % min_rows or in_features % min_cols:
            report[name] = (
                f"dense: weight {out_features}x{in_features} is not a multiple of {min_rows}x{min_cols}"
            )
            continue
        weight = convert(module.weight.detach().reshape(out_features, in_features).contiguous())
        bias = None if module.bias is None else module.bias.detach()
        replacement = SemiStructuredLinear(weight, bias, pointwise=isinstance(module, nn.Conv2d))
        fast.set_submodule(name, replacement)
        report[name] = "2:4"
    return fast, report


class CudaGraph:
    """``model``'s forward on inputs shaped like ``sample``, captured once as a CUDA graph and replayed.

    Replaying skips the Python and host-side work of every layer (for 2:4 layers, cuSPARSELt's per-call
    setup), so only the GPU kernels run. The output tensor is reused by the next call: copy it to keep it.

    Example:
        >>> # fast, _ = to_semi_structured(model); run = CudaGraph(fast, x.cuda().half()); logits = run(x2)
    """

    def __init__(self, model: nn.Module, sample: torch.Tensor, warmup: int = 3):
        self.model = model
        self.input = sample.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        # Warm-up on a side stream (as torch.cuda.graph requires): lazy initialisation and autotuning happen
        # outside the capture.
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(warmup):
                model(self.input)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.output = model(self.input)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape != self.input.shape:
            raise ValueError(
                f"this CUDA graph was captured for inputs of shape {tuple(self.input.shape)}, got "
                f"{tuple(x.shape)}; capture another CudaGraph for that shape"
            )
        self.input.copy_(x)
        self.graph.replay()
        return self.output


def latency_ms(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, warmup: int = 5, repeats: int = 20
) -> float:
    """Median GPU time of ``fn(x)`` in milliseconds, from CUDA events around each call (after ``warmup`` calls).

    The events bracket the whole call, so host work that delays the kernels (launch overhead, per-call setup)
    counts too, as it does for a user.
    """
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(x)
            end.record()
            torch.cuda.synchronize()
            if i >= warmup:
                times.append(start.elapsed_time(end))
    return float(sorted(times)[len(times) // 2])
