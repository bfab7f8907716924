"""nas.evaluation.evaluate_subnet: BN recalibration, restoration of the supernet's state, contract."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from nas import metrics
from nas.evaluation import evaluate_subnet
from search_spaces import mobilenetv3


def _net_and_data():
    torch.manual_seed(0)
    net = mobilenetv3.supernet("small", num_classes=10, in_channels=1)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 1, 28, 28, generator=g)
    # a learnable label: the sign of the mean brightness of the left half
    y = (x[:, :, :, :14].mean((1, 2, 3)) > 0).long()
    return net, TensorDataset(x, y)


def test_evaluate_restores_buffers_mode_and_active_config():
    net, data = _net_and_data()
    net.train()
    cfg0 = net.activate(net.space.sample(5))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    acc = evaluate_subnet(net, net.space.min(), data, calib_batches=2, calib_batch_size=32)
    assert 0.0 <= acc <= 100.0
    assert net.training and net.active_config == cfg0
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.momentum == 0.1 for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_cpu_evaluation_in_channels_last_memory_scores_alike_and_restores_the_layout(monkeypatch):
    import contextlib

    import nas.evaluation

    net, data = _net_and_data()
    cfgs = [net.space.max(), net.space.min(), net.space.sample(3)]
    for memory_format in (torch.contiguous_format, torch.channels_last):
        net.to(memory_format=memory_format)
        layout = {name: (p.data_ptr(), p.stride()) for name, p in net.named_parameters()}
        fast = [evaluate_subnet(net, c, data, calib_batches=2, calib_batch_size=32) for c in cfgs]
        assert {name: (p.data_ptr(), p.stride()) for name, p in net.named_parameters()} == layout
        with monkeypatch.context() as m:
            m.setattr(nas.evaluation, "channels_last_on_cpu", lambda net: contextlib.nullcontext())
            plain = [evaluate_subnet(net, c, data, calib_batches=2, calib_batch_size=32) for c in cfgs]
        assert fast == plain and len(set(fast)) > 1
    net.to(memory_format=torch.contiguous_format)
    with nas.evaluation.channels_last_on_cpu(net):
        # every conv weight, 1x1 and depthwise ones included, is strided channels-last inside the block
        convs = [p for p in net.parameters() if p.dim() == 4]
        assert all(p.stride() == p.to(memory_format=torch.channels_last).stride() for p in convs)
        assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert all(p.is_contiguous() and p.stride() == p.contiguous().stride() for p in convs)


def test_evaluation_after_the_weights_changed_sees_the_new_weights():
    # The layout switch swaps weight tensors in and out; slices cached from the temporary copies must not be
    # served after training changed the weights (a new copy may reuse a freed address).
    from nas.ops.elastic import _SliceCache

    net, data = _net_and_data()
    cfg = net.space.sample(4)
    evaluate_subnet(net, cfg, data, calib_batches=1, calib_batch_size=32)
    caches = [v for m in net.modules() for v in vars(m).values() if isinstance(v, _SliceCache)]
    assert caches and all(c.key is None for c in caches)
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() == 4:
                p.mul_(-1.5)
    again = evaluate_subnet(net, cfg, data, calib_batches=1, calib_batch_size=32)
    fresh, _ = _net_and_data()
    fresh.load_state_dict(net.state_dict())
    assert again == evaluate_subnet(fresh, cfg, data, calib_batches=1, calib_batch_size=32)


def test_recalibration_matters_and_is_deterministic():
    net, data = _net_and_data()
    # training-mode passes through the max subnet leave running stats that do not fit the min subnet
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(data.tensors[0][:32] * 3.0 + 1.0)
    cfg = net.space.min()
    a = evaluate_subnet(net, cfg, data, calib_data=data)
    b = evaluate_subnet(net, cfg, data, calib_data=data)
    assert a == b
    x = data.tensors[0]
    # recalibrated statistics equal a manual computation: the first BN sees the stem conv output
    from nas.evaluation import bn_calibration, recalibrate_bn

    with bn_calibration(net):
        net.activate(cfg)
        recalibrate_bn(net, x, net.active_config, batches=1, batch_size=96)
        bn = net.stem[1]
        from nas.supernet import resize_to

        feat = net.stem[0](resize_to(x, cfg))
        assert torch.allclose(bn.running_mean, feat.mean((0, 2, 3)), atol=1e-5)
    # and it is restored afterwards
    assert not torch.allclose(net.stem[1].running_mean, feat.mean((0, 2, 3)), atol=1e-5)


def test_metrics_evaluate_delegates_and_accepts_pairs():
    net, data = _net_and_data()
    cfg = net.space.sample(2)
    a = metrics.evaluate(net, cfg, data, calib_data=data, calib_batches=1)
    b = evaluate_subnet(net, cfg, data.tensors, calib_data=data.tensors, calib_batches=1)
    assert a == b
    assert evaluate_subnet(net, cfg, data, max_examples=10) in {10.0 * k for k in range(11)}


def test_images_and_labels_of_the_wrong_kind_are_named():
    net, data = _net_and_data()
    x, y = data.tensors
    cfg = net.space.min()
    kw = {"calib_batches": 1}
    with pytest.raises(
        TypeError, match=r"a tuple of \(ndarray, ndarray\); convert them with torch.as_tensor"
    ):
        evaluate_subnet(net, cfg, (x.numpy(), y.numpy()), **kw)
    with pytest.raises(ValueError, match=r"images are torch\.uint8; pass float images"):
        evaluate_subnet(net, cfg, (x.clamp(0, 1).mul(255).to(torch.uint8), y), **kw)
    with pytest.raises(ValueError, match=r"shape \(96, 2\) \(one-hot\? use y.argmax\(1\)\)"):
        evaluate_subnet(net, cfg, (x, torch.nn.functional.one_hot(y, 2)), **kw)
    with pytest.raises(ValueError, match=r"labels are torch\.float32; class indices must be integers"):
        evaluate_subnet(net, cfg, (x, y.float()), **kw)
    # Other integer labels are class indices too; calibration images come with labels that are never read.
    assert evaluate_subnet(net, cfg, (x, y.int()), **kw) == evaluate_subnet(net, cfg, data, **kw)
    assert evaluate_subnet(net, cfg, data, calib_data=(x, y.float()), **kw) == evaluate_subnet(
        net, cfg, data, **kw
    )


def test_recalibration_draws_from_the_whole_calibration_set():
    # A class-sorted set (first half all 0, second half all 1): the first N images would give BN a mean of 0.
    from torch import nn

    from nas.evaluation import recalibrate_bn

    net = nn.Sequential(nn.BatchNorm2d(1))
    calib = torch.cat([torch.zeros(512, 1, 2, 2), torch.ones(512, 1, 2, 2)])
    used = recalibrate_bn(net, calib, batches=2, batch_size=64)
    assert used == 128
    assert 0.3 < float(net[0].running_mean) < 0.7
    first = float(net[0].running_mean)
    recalibrate_bn(net, calib, batches=2, batch_size=64)
    assert float(net[0].running_mean) == first  # the same fixed draw every call


def test_bundled_mnist_training_images_are_not_sorted_by_class():
    from nas import data

    labels = data.mnist("train").tensors[1]
    assert len(set(labels[:100].tolist())) == 10


@pytest.mark.parametrize("dropout", ["Dropout", "Dropout2d", "AlphaDropout", "FeatureAlphaDropout"])
def test_recalibration_runs_every_kind_of_dropout_in_eval_mode(dropout):
    # A user's supernet may put Dropout2d before a BN: with it active the statistics fit no eval pass.
    from torch import nn

    from nas.evaluation import recalibrate_bn

    drop = getattr(nn, dropout)(0.5)
    net = nn.Sequential(drop, nn.BatchNorm2d(4))
    x = torch.randn(64, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    recalibrate_bn(net, x, batches=1, batch_size=64)
    torch.testing.assert_close(net[1].running_mean, x.mean((0, 2, 3)))
    torch.testing.assert_close(net[1].running_var, x.var((0, 2, 3)))
    assert not drop.training and not net.training  # left in eval mode, as before


def test_a_network_without_buffers_is_not_run_on_calibration_images():
    # A ViT has layer norms only: a training-mode pass re-estimates nothing, so the 8 x 256 calibration
    # forwards of every evaluation in a search (and of `nas export`) were pure cost.
    from nas.evaluation import recalibrate_bn
    from search_spaces import vit

    torch.manual_seed(0)
    net = vit.supernet("small", num_classes=10, in_channels=1)
    assert next(net.buffers(), None) is None
    seen = []
    net.patch_embed.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    calib = torch.randn(64, 1, 28, 28)
    acc = evaluate_subnet(net, net.space.min(), (x, y), calib_data=calib)
    assert 0.0 <= acc <= 100.0
    assert seen == [8]  # the evaluated images only
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert recalibrate_bn(net, torch.randn(64, 1, 24, 24), net.space.min()) == 0
    assert seen == [8]


def test_calibration_images_may_come_without_labels():
    # BN recalibration reads only the images; a tensor of them was refused ("expected a TensorDataset or an
    # (images, labels) pair, got Tensor"), so callers (the trainer's validation too) invented labels.
    net, data = _net_and_data()
    calib = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    pair = (calib, torch.zeros(64, dtype=torch.long))
    kwargs = {"calib_batches": 1, "calib_batch_size": 64}
    assert evaluate_subnet(net, net.space.min(), data, calib_data=calib, **kwargs) == evaluate_subnet(
        net, net.space.min(), data, calib_data=pair, **kwargs
    )
    with pytest.raises(TypeError, match="a tensor of images"):
        evaluate_subnet(net, net.space.min(), data, calib_data=[1, 2, 3])
    with pytest.raises(TypeError, match="got Tensor"):
        evaluate_subnet(net, net.space.min(), calib, calib_data=calib)  # the evaluated data needs labels


def test_recalibrated_statistics_are_those_of_all_calibration_images_in_uneven_batches():
    """36 images in batches of up to 32: the running mean is the exact mean over all 36 (each batch counts by
    its images; a plain cumulative average gave a short last batch the weight of a full one)."""
    from torch import nn

    from nas.evaluation import bn_calibration, recalibrate_bn

    torch.manual_seed(0)
    conv = nn.Conv2d(1, 4, 3)
    net = nn.Sequential(conv, nn.BatchNorm2d(4))
    x = torch.randn(36, 1, 6, 6)
    x[-4:] += 5.0  # the images a short last batch would hold: far from the others
    with torch.no_grad():
        pre = conv(x)  # the BN's inputs (nothing before it depends on the batch)
    with bn_calibration(net):
        assert recalibrate_bn(net, x, batches=2, batch_size=32) == 36
        torch.testing.assert_close(net[1].running_mean, pre.mean((0, 2, 3)))
    assert net[1].momentum == 0.1 and not torch.any(net[1].running_mean)  # restored
    # one batch of all of them: the unbiased variance as well
    recalibrate_bn(net, x, batches=1, batch_size=64)
    torch.testing.assert_close(net[1].running_mean, pre.mean((0, 2, 3)))
    torch.testing.assert_close(net[1].running_var, pre.transpose(0, 1).reshape(4, -1).var(1))


def test_accuracy_is_a_hand_count_on_the_extracted_subnet_with_recalibrated_statistics():
    """evaluate_subnet == argmax == label counted by hand on the extracted static subnet, whose batch norms are
    recalibrated by hand (training mode, no dropout, the same two batches); the supernet is left as it was."""
    from torch import nn

    from nas.supernet import resize_to

    net, data = _net_and_data()
    x, y = data.tensors
    calib = torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    cfg = net.space.canonical(net.space.sample(4).replace(resolution=min(net.space["resolution"].values)))
    net.train()
    net.stages[0].eval()  # mixed modes come back as they were
    modes = [m.training for m in net.modules()]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    acc = evaluate_subnet(
        net, cfg, data, calib_data=calib, calib_batches=2, calib_batch_size=16, batch_size=10
    )
    assert [m.training for m in net.modules()] == modes
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    sub = net.extract(cfg)
    with torch.no_grad():
        for m in sub.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        sub.train()
        for m in sub.modules():
            if isinstance(m, nn.Dropout):
                m.eval()
        for start in (0, 16):  # all 32 images are used (no random draw), in two batches of 16
            sub(resize_to(calib[start : start + 16], cfg))
        predicted = sub.eval()(resize_to(x, cfg)).argmax(1)
    assert acc == 100.0 * int((predicted == y).sum()) / len(y)


def test_recalibration_records_no_autograd_graph():
    # Called directly (nas export's BN re-estimation does), it must not record gradients: activations kept
    # for a backward pass that never comes cost memory (on a GPU too) and disable the elastic slice caches.
    from nas.evaluation import recalibrate_bn

    net, data = _net_and_data()
    grad_enabled = []
    net.register_forward_hook(lambda module, args, out: grad_enabled.append(out.requires_grad))
    assert recalibrate_bn(net, data.tensors[0], net.space.max(), batches=2, batch_size=32) == 64
    assert grad_enabled == [False, False]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_net_scores_data_on_the_gpu_as_data_on_the_cpu():
    # Labels on the GPU used to meet predictions moved to the CPU ("expected all tensors on the same device").
    net, data = _net_and_data()
    net.cuda()
    x, y = data.tensors
    on_cpu = evaluate_subnet(net, net.space.max(), (x, y), calib_batches=1, calib_batch_size=32)
    assert (
        evaluate_subnet(net, net.space.max(), (x.cuda(), y.cuda()), calib_batches=1, calib_batch_size=32)
        == on_cpu
    )


def test_device_of_falls_back_to_buffers_then_the_cpu():
    from torch import nn

    from nas.evaluation import device_of

    buffers_only = nn.BatchNorm2d(3, affine=False)
    buffers_only.to("meta")  # stands in for a GPU: anywhere but the CPU
    assert device_of(buffers_only).type == "meta"
    assert device_of(nn.ReLU()).type == "cpu"
    assert device_of(nn.Linear(2, 2).to("meta")).type == "meta"
