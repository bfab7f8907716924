"""Cheap analytic metrics of a subnet (MACs, parameters, storage bytes) and the accuracy entry point.

MACs and parameters come from :meth:`nas.Supernet.layer_specs` alone, without a forward pass, so they cost
well under a millisecond per config and can serve as search objectives.

Conventions:
    * MACs count multiply-accumulates of convolutions (including squeeze-excite 1x1 convs) and linear layers
      (once per token on token sequences), and attention's two token products ``q k^T`` and ``scores @ v``
      (``2 * tokens^2 * heads * head_dim``; its projections are linear layers); batch and layer norm,
      activations, softmax, pooling, residual adds and position embeddings count zero (the usual "FLOPs"
      tables of MobileNet and ViT papers follow the same rule).
    * Parameters count trainable tensors of the extracted model: weights, biases and BN affine parameters
      (not BN running statistics, which are buffers).

Example:
    >>> from search_spaces import mobilenetv3
    >>> net = mobilenetv3.supernet("small")
    >>> macs(net, net.space.min()) < macs(net, net.space.max())
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nas.supernet import Supernet

__all__ = ["evaluate", "macs", "model_bytes", "params"]


def macs(net: Supernet, cfg: Mapping[str, Any]) -> int:
    """Multiply-accumulates of one forward pass of subnet ``cfg`` at batch size 1."""
    return sum(spec.macs for spec in net.layer_specs(cfg))


def params(net: Supernet, cfg: Mapping[str, Any]) -> int:
    """Trainable parameters of subnet ``cfg`` (what ``sum(p.numel())`` gives on the extracted model)."""
    return sum(spec.params for spec in net.layer_specs(cfg))


def model_bytes(net: Supernet, cfg: Mapping[str, Any]) -> int:
    """Storage bytes of subnet ``cfg``'s parameters, aware of weight bit-width and sparsity.

    Weights take ``bits / 8`` bytes each; biases and BN parameters stay float32 (4 bytes). A quantized layer
    adds one float32 scale per output channel. Sparse weights are counted as stored in compressed form: the
    kept values at their bit-width plus a bitmap of one bit per weight (unstructured), or 2 bits of position
    per kept value for N:M patterns (as in NVIDIA's 2:4 metadata). Dense float layers cost ``4 * params``.
    """
    total_bits = 0
    for spec in net.layer_specs(cfg):
        weights = spec.weight_count
        if weights:
            kept = round(weights * spec.density)
            total_bits += kept * spec.bits
            if spec.density < 1.0:
                total_bits += 2 * kept if spec.pattern else weights
            if spec.bits < 32:
                total_bits += 32 * spec.out_channels
        total_bits += 32 * spec.bias_count
    return (total_bits + 7) // 8


def evaluate(
    net: Supernet, cfg: Mapping[str, Any], data: Any, calib_data: Any = None, **kwargs: Any
) -> float:
    """Top-1 accuracy in percent of subnet ``cfg`` on ``data``, batch norm recalibrated for that subnet.

    ``data`` and ``calib_data`` are datasets or ``(images, labels)`` pairs; the batch-norm statistics are
    recomputed on ``calib_batches`` (default 8) batches of 256 ``calib_data`` images (``data`` itself when
    none is given). Keyword arguments go to :func:`nas.evaluation.evaluate_subnet`, which documents them.

    Example:
        >>> import torch
        >>> from search_spaces import mobilenetv3
        >>> net = mobilenetv3.supernet("small", num_classes=10, in_channels=1)
        >>> images, labels = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
        >>> 0.0 <= evaluate(net, net.space.min(), (images, labels), calib_batches=1) <= 100.0
        True
    """
    from nas.evaluation import evaluate_subnet

    return evaluate_subnet(net, cfg, data, calib_data=calib_data, **kwargs)
