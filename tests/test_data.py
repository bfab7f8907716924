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


def test_train_val_split_keeps_every_class_in_training():
    # round(0.97 * 10) = 10 of each class went to val: the training part was empty
    ds = torch.utils.data.TensorDataset(torch.arange(20.0)[:, None], torch.arange(20) % 2)
    tr, va = data.train_val_split(ds, 0.97)
    assert tr.tensors[1].bincount().tolist() == [1, 1] and va.tensors[1].bincount().tolist() == [9, 9]
    # a class of one example stays in training; one of two gives one to each part
    tiny = torch.utils.data.TensorDataset(torch.arange(3.0)[:, None], torch.tensor([0, 1, 1]))
    tr, va = data.train_val_split(tiny, 0.6)
    assert sorted(tr.tensors[1].tolist()) == [0, 1] and va.tensors[1].tolist() == [1]


def test_npz_damaged_or_not_holding_arrays_is_a_clear_error(tmp_path):
    import zipfile

    path = tmp_path / "damaged.npz"
    np.savez(path, x_train=np.zeros((50, 8, 8), np.uint8), y_train=np.arange(50) % 2)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # inside x_train's data: its CRC fails (zipfile.BadZipFile, a traceback)
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"damaged\.npz is not a NumPy \.npz file, or is damaged \(Bad CRC"):
        data.npz(path)
    other = tmp_path / "other.npz"
    with zipfile.ZipFile(other, "w") as z:  # np.load hands such members back as bytes (an AttributeError)
        z.writestr("x_train.npy", b"not an array")
        z.writestr("y_train.npy", b"nor this")
    with pytest.raises(ValueError, match=r"other\.npz: not NumPy arrays: x_train, y_train"):
        data.npz(other)


def test_npz_of_a_single_class_is_refused(tmp_path):
    # all-zero labels trained a one-class "classifier" every subnet of which scores 100%, without a word
    path = tmp_path / "one.npz"
    np.savez(path, x_train=np.zeros((10, 8, 8), np.uint8), y_train=np.zeros(10, np.int64))
    with pytest.raises(
        ValueError, match=r"one\.npz: y_train has a single class \(0\); a classifier needs at least two"
    ):
        data.npz(path)


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


def test_cifar10_empty_batch_file_says_what_to_do(tmp_path):
    # an interrupted extraction leaves an empty file: numpy's "zero-size array to reduction operation" said nothing
    (tmp_path / "test_batch.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"test_batch\.bin is empty; extract cifar-10-binary\.tar\.gz again"):
        data.cifar10(tmp_path, "test")


def test_npz_reads_your_own_images_normalised_by_the_training_split(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(20, 3, 6, 6), dtype=np.uint8)
    xt = rng.integers(0, 256, size=(5, 3, 6, 6), dtype=np.uint8)
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=x, y_train=np.arange(20) % 4, x_test=xt, y_test=np.arange(5) % 4)
    train, test = data.npz(path), data.npz(path, "test")
    assert tuple(train.tensors[0].shape) == (20, 3, 6, 6) and tuple(test.tensors[0].shape) == (5, 3, 6, 6)
    assert train.tensors[1].dtype == torch.int64 and train.tensors[1].tolist() == (np.arange(20) % 4).tolist()
    per_channel = train.tensors[0].transpose(0, 1).reshape(3, -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(per_channel.std(1, unbiased=False), torch.ones(3), atol=1e-4)
    # the test split uses the training statistics
    expected = (xt[0, 0, 0, 0] / 255.0 - (x[:, 0] / 255.0).mean()) / (x[:, 0] / 255.0).std()
    assert test.tensors[0][0, 0, 0, 0].item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((4, 5, 5))}, "lacks x_train"),
        ({"x_train": np.zeros((4, 5, 5, 3)), "y_train": np.zeros(4, int)}, "channels-first"),
        (
            {"x_train": np.zeros((4, 5, 5)), "y_train": np.zeros(3, int)},
            "must be 4 non-negative integer labels",
        ),
        ({"x_train": np.zeros((4, 5, 5)), "y_train": np.zeros(4)}, "integer labels"),
        (
            {"x_train": np.zeros((4, 5, 5)), "y_train": np.eye(4, dtype=int)},
            r"one-hot\? save y_train\.argmax\(1\)",
        ),
        ({"x_train": np.zeros((4, 5, 5), dtype=np.int32), "y_train": np.zeros(4, int)}, "uint8 or float"),
        ({"x_train": np.zeros((4, 5, 5)), "y_train": np.array([None] * 4, dtype=object)}, "without pickle"),
        (
            {"x_train": np.zeros((0, 5, 5)), "y_train": np.zeros(0, int)},
            r"x_train holds no images \(shape \(0, 5, 5\)\)",
        ),
        (
            {
                "x_train": np.where(np.arange(100).reshape(4, 5, 5) == 60, np.nan, 0.5),
                "y_train": np.zeros(4, int),
            },
            r"NaN or infinite pixels in 1 images \(first: index 2\)",
        ),
    ],
)
def test_npz_bad_files_say_what_is_wrong(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        data.npz(path)


def test_npz_missing_file_or_test_split(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"np\.savez"):
        data.npz(tmp_path / "none.npz")
    path = tmp_path / "train-only.npz"
    np.savez(path, x_train=np.zeros((4, 5, 5), np.uint8), y_train=np.arange(4) % 2)
    with pytest.raises(ValueError, match="holds no test split"):
        data.npz(path, "test")
    (tmp_path / "text.npz").write_text("not numpy")
    with pytest.raises(ValueError, match=r"not a NumPy \.npz file"):
        data.npz(tmp_path / "text.npz")


def test_npz_keras_layout_is_refused_with_the_transpose_then_read(tmp_path):
    # Keras/TF give CIFAR-10 as (N, 32, 32, 3) uint8 images and (N, 1) labels: the images must not be read as 32
    # channels; the error names the transpose, and after it the (N, 1) labels are taken as they are.
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8)
    y = (np.arange(20) % 10).astype(np.uint8)[:, None]
    path = tmp_path / "keras.npz"
    np.savez(path, x_train=x, y_train=y)
    with pytest.raises(ValueError, match=r"channels-last .*x_train\.transpose\(0, 3, 1, 2\)"):
        data.npz(path)
    np.savez(path, x_train=x.transpose(0, 3, 1, 2), y_train=y)
    images, labels = data.npz(path).tensors
    assert tuple(images.shape) == (20, 3, 32, 32) and labels.tolist() == y[:, 0].tolist()
    green = x[..., 1] / 255.0  # channel 1 is the images' green plane, normalised with its own statistics
    assert images[3, 1, 5, 7].item() == pytest.approx((green[3, 5, 7] - green.mean()) / green.std(), rel=1e-4)
    np.savez(path, x_train=rng.integers(0, 256, size=(20, 32, 32, 4), dtype=np.uint8), y_train=y)  # RGBA
    with pytest.raises(ValueError, match="channels-last"):
        data.npz(path)


def test_npz_refuses_a_shape_that_reads_channels_first_or_last_unless_the_file_says(tmp_path):
    """(N, 3, 32, 3) is 32 x 3 RGB or, channels-last, 3 x 32 RGB; it was read channels-first silently, so
    channels-last images of height 1, 3 or 4 mixed their rows into channels."""
    rng = np.random.default_rng(0)
    y = np.arange(20) % 2
    path = tmp_path / "mine.npz"
    for shape in [(20, 3, 32, 3), (20, 1, 16, 3), (20, 4, 8, 1)]:
        np.savez(path, x_train=rng.integers(0, 256, size=shape, dtype=np.uint8), y_train=y)
        with pytest.raises(
            ValueError, match=r"reads as channels-first \(N, C, H, W\) or channels-last .*'NCHW'"
        ):
            data.npz(path)
    # the file says it is channels-first: read as stored, both splits
    x = rng.integers(0, 256, size=(20, 3, 32, 3), dtype=np.uint8)
    np.savez(path, x_train=x, y_train=y, x_test=x[:4], y_test=y[:4], layout="NCHW")
    assert tuple(data.npz(path).tensors[0].shape) == (20, 3, 32, 3)
    assert tuple(data.npz(path, "test").tensors[0].shape) == (4, 3, 32, 3)
    np.savez(path, x_train=x, y_train=y, layout="NHWC")
    with pytest.raises(ValueError, match=r"layout must be the string 'NCHW' .*got 'NHWC'"):
        data.npz(path)
    # still read as before: channels-last transposed as the error says, one channel either way, (N, H, W) images
    for stored, read in [
        (x.transpose(0, 3, 1, 2), (20, 3, 3, 32)),
        (np.zeros((20, 1, 16, 1), np.uint8), (20, 1, 16, 1)),
        (np.zeros((20, 8, 3), np.uint8), (20, 1, 8, 3)),
        (np.zeros((20, 3, 6, 6), np.uint8), (20, 3, 6, 6)),
    ]:
        np.savez(path, x_train=stored, y_train=y)
        assert tuple(data.npz(path).tensors[0].shape) == read


@pytest.mark.parametrize(
    "arrays, message",
    [
        # labels 1..10 (MATLAB-style) or with gaps would add classes no image has
        ({"x_train": np.zeros((4, 5, 5)), "y_train": np.array([1, 2, 3, 4])}, r"0 \.\. K-1 .*\[1, 2, 3, 4\]"),
        ({"x_train": np.zeros((4, 5, 5)), "y_train": np.array([0, 2, 0, 2])}, "np.unique"),
        (
            {
                "x_train": np.zeros((4, 5, 5)),
                "y_train": np.array([0, 1, 0, 1]),
                "x_test": np.zeros((2, 5, 5)),
            },
            r"no test split \(no y_test\)",
        ),
        (
            {
                "x_train": np.zeros((4, 5, 5)),
                "y_train": np.array([0, 1, 0, 1]),
                "x_test": np.zeros((2, 5, 5)),
                "y_test": np.array([1, 2]),
            },
            r"y_test has labels \[2\] that y_train lacks",
        ),
        (
            {
                "x_train": np.zeros((4, 5, 5), np.uint8),
                "y_train": np.array([0, 1, 0, 1]),
                "x_test": np.zeros((2, 5, 5), np.float32),
                "y_test": np.array([0, 1]),
            },
            "x_test is float32 but x_train uint8",
        ),
    ],
)
def test_npz_labels_and_test_split_that_would_mislead_are_refused(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        data.npz(path, "test" if "x_test" in arrays else "train")
