"""Elastic layers that store max-size weights once and slice them for the active subnet (convolutions, batch
and layer norms, linear layers, multi-head self-attention).

Example:
    >>> import torch
    >>> from nas.ops import ElasticConv2d
    >>> conv = ElasticConv2d(8, 16, kernel_sizes=(3, 5))
    >>> conv.set_active(out_channels=4, kernel=3)
    >>> tuple(conv(torch.randn(1, 8, 6, 6)).shape)
    (1, 4, 6, 6)
"""

from nas.ops.blocks import ACTIVATIONS, ElasticBottleneck, ElasticMBConv, ElasticSqueezeExcite, conv_out_size
from nas.ops.elastic import (
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticLayerNorm,
    ElasticLinear,
    ElasticSequential,
    make_divisible,
)
from nas.ops.quant import WEIGHT_BITS, ElasticActQuant, fake_quant_weight
from nas.ops.sparse import SPARSITY_LEVELS, apply_sparsity, sparsity_mask
from nas.ops.transformer import (
    ElasticMultiheadSelfAttention,
    ElasticPatchEmbed,
    ElasticTransformerBlock,
    mlp_hidden,
)

__all__ = [
    "ACTIVATIONS",
    "SPARSITY_LEVELS",
    "WEIGHT_BITS",
    "ElasticActQuant",
    "ElasticBatchNorm2d",
    "ElasticBottleneck",
    "ElasticConv2d",
    "ElasticLayerNorm",
    "ElasticLinear",
    "ElasticMBConv",
    "ElasticMultiheadSelfAttention",
    "ElasticPatchEmbed",
    "ElasticSequential",
    "ElasticSqueezeExcite",
    "ElasticTransformerBlock",
    "apply_sparsity",
    "conv_out_size",
    "fake_quant_weight",
    "make_divisible",
    "mlp_hidden",
    "sparsity_mask",
]
