"""nas.data: bundled MNIST, sklearn digits, CIFAR-10 binary reader, stratified split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas import data


def test_mnist_train_and_test_shapes_labels_normalisation():
    train, test = data.mnist("train"), data.mnist("test")
    x, y = train.tensors
    assert tuple(x.shape) == (5000, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.bincount().tolist() == [500] * 10
    # normalised with the MNIST mean/std: roughly zero mean, unit std
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1.0) < 0.1
    xt, yt = test.tensors
    assert tuple(xt.shape) == (10000, 1, 28, 28)
    # the official test set starts with the labels 7 2 1 0 4 1 4 9 5 9
    assert yt[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert float(xt.min()) == pytest.approx(-data.MNIST_MEAN / data.MNIST_STD, abs=1e-5)


def test_mnist_bad_split():
    with pytest.raises(ValueError, match="split='val'"):
        data.mnist("val")


def test_digits():
    x, y = data.digits().tensors
    assert tuple(x.shape) == (1797, 1, 8, 8) and set(y.tolist()) == set(range(10))


def test_train_val_split_stratified_reproducible_disjoint():
    ds = data.digits()
    tr, va = data.train_val_split(ds, 0.2, seed=3)
    _, va2 = data.train_val_split(ds, 0.2, seed=3)
    assert len(tr) + len(va) == len(ds)
    assert torch.equal(va.tensors[0], va2.tensors[0])
    counts = va.tensors[1].bincount(minlength=10).float() / ds.tensors[1].bincount().float()
    assert float(counts.min()) > 0.15 and float(counts.max()) < 0.25
    _, va3 = data.train_val_split(ds, 0.2, seed=4)
    assert not torch.equal(va.tensors[1], va3.tensors[1]) or not torch.equal(va.tensors[0], va3.tensors[0])
    # disjoint: no validation image is in the training part
    flat_tr = {tuple(r) for r in tr.tensors[0].flatten(1).numpy().round(4).tolist()}
    dup = sum(tuple(r) in flat_tr for r in va.tensors[0].flatten(1).numpy().round(4).tolist())
    assert dup <= 5  # sklearn digits contains a few exact duplicate images
    with pytest.raises(ValueError, match="val_fraction"):
        data.train_val_split(ds, 1.5)


def _write_cifar(folder, n_per_file: int, names) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    all_img, all_lab = [], []
    for name in names:
        labels = rng.integers(0, 10, n_per_file, dtype=np.uint8)
        images = rng.integers(0, 256, (n_per_file, 3 * 32 * 32), dtype=np.uint8)
        np.concatenate([labels[:, None], images], axis=1).tofile(folder / name)
        all_img.append(images)
        all_lab.append(labels)
    return np.concatenate(all_img), np.concatenate(all_lab)


def test_cifar10_binary_reader(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    images, labels = _write_cifar(folder, 4, [f"data_batch_{i}.bin" for i in range(1, 6)])
    _write_cifar(folder, 3, ["test_batch.bin"])
    train = data.cifar10(tmp_path, "train")
    x, y = train.tensors
    assert tuple(x.shape) == (20, 3, 32, 32) and y.tolist() == labels.tolist()
    # channel order R, G, B planes; normalised with the CIFAR-10 statistics
    r0 = images[0, :1024].reshape(32, 32) / 255.0
    expect = (r0 - data.CIFAR10_MEAN[0]) / data.CIFAR10_STD[0]
    assert np.allclose(x[0, 0].numpy(), expect, atol=1e-5)
    assert len(data.cifar10(folder, "test")) == 3  # the folder itself works too


def test_cifar10_missing_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-binary\.tar\.gz"):
        data.cifar10(tmp_path, "train")
