"""Datasets as ``torch.utils.data.TensorDataset`` of normalised float images ``(N, C, H, W)`` and int64 labels.

* :func:`mnist`: the MNIST data bundled with the package (``nas/data_files``, sources in its README): 5,000
  training images (500 per class) and the official 10,000 test images, 1x28x28.
* :func:`digits`: scikit-learn's 1,797 8x8 digits, 1x8x8 (resize with :func:`nas.supernet.resize_to` for
  networks that expect 24-32 px inputs).
* :func:`cifar10`: CIFAR-10 from the user's copy of the *binary* version (``cifar-10-batches-bin``), read with
  numpy (no pickle, no torchvision).
* :func:`npz`: your own labelled images from a NumPy ``.npz`` file (read without pickle).
* :func:`train_val_split`: a seeded, stratified split of any ``TensorDataset``.

Normalisation uses the usual per-dataset channel mean and standard deviation (see the constants below), so
that the same preprocessing holds for training, evaluation and export.

Example:
    >>> test = mnist("test")
    >>> len(test), tuple(test.tensors[0].shape[1:])
    (10000, (1, 28, 28))
"""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "cifar10",
    "digits",
    "mnist",
    "npz",
    "train_val_split",
]

DATA_DIR = Path(__file__).parent / "data_files"

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of the full 60,000 MNIST training images (pixels scaled to [0, 1])
DIGITS_MEAN, DIGITS_STD = 0.3054, 0.3781  # of sklearn digits (pixels scaled to [0, 1] by /16)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

_MNIST_FILES = {
    "train": ("mnist_train_5k.csv.gz",),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _check_split(split: str, allowed: tuple[str, ...]) -> str:
    if split not in allowed:
        raise ValueError(f"split={split!r} is not supported; use one of {', '.join(map(repr, allowed))}")
    return split


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): magic (2 zero bytes, dtype code 0x08 = uint8, ndim), big-endian dims."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an uint8 IDX file (bad magic {raw[:4]!r})")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} ({int(np.prod(dims))} values) but holds {data.size}")
    return data.reshape(dims)


def _to_dataset(images_u8: np.ndarray, labels: np.ndarray, mean, std, scale: float = 255.0) -> TensorDataset:
    x = torch.from_numpy(np.ascontiguousarray(images_u8, dtype=np.float32)) / scale
    mean_t = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
    x = (x - mean_t) / std_t
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    return TensorDataset(x.contiguous(), y)


def mnist(split: str = "train") -> TensorDataset:
    """The bundled MNIST data: ``"train"`` (5,000 images, 500 per class) or ``"test"`` (the official 10,000).

    Images are ``(N, 1, 28, 28)`` float32 normalised with ``(x/255 - 0.1307) / 0.3081``. The training images
    come in a fixed shuffled order (the shipped file is sorted by class).

    Example:
        >>> x, y = mnist("train").tensors
        >>> tuple(x.shape), int(y.bincount().min())
        ((5000, 1, 28, 28), 500)
    """
    _check_split(split, ("train", "test"))
    if split == "train":
        path = DATA_DIR / _MNIST_FILES["train"][0]
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
        if table.ndim != 2 or table.shape[1] != 785:
            raise ValueError(f"{path}: expected rows of 784 pixels + label, got shape {table.shape}")
        # The file is sorted by class: shuffle it once, reproducibly, so that any slice (a calibration set,
        # a quick subset) holds every digit.
        table = table[np.random.default_rng(0).permutation(len(table))]
        images, labels = table[:, :784].reshape(-1, 1, 28, 28), table[:, 784]
    else:
        images = _read_idx(DATA_DIR / _MNIST_FILES["test"][0])[:, None]
        labels = _read_idx(DATA_DIR / _MNIST_FILES["test"][1])
    if len(images) != len(labels):
        raise ValueError(f"MNIST {split}: {len(images)} images but {len(labels)} labels")
    return _to_dataset(images, labels, (MNIST_MEAN,), (MNIST_STD,))


def digits() -> TensorDataset:
    """scikit-learn's 1,797 handwritten digits as ``(N, 1, 8, 8)`` float32, normalised, labels 0-9.

    The pixels (0-16) are normalised with ``(x/16 - 0.3054) / 0.3781``, as MNIST's are from 0-255.

    Example:
        >>> x, y = digits().tensors
        >>> tuple(x.shape), int(y.max())
        ((1797, 1, 8, 8), 9)
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32)[:, None]  # values 0..16
    return _to_dataset(images, bunch.target, (DIGITS_MEAN,), (DIGITS_STD,), scale=16.0)


_CIFAR_FILES = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}
_CIFAR_RECORD = 1 + 3 * 32 * 32  # label byte, then 1024 R, 1024 G, 1024 B bytes


def cifar10(root: str | Path, split: str = "train") -> TensorDataset:
    """CIFAR-10 from the binary version: ``root`` is (or contains) ``cifar-10-batches-bin``.

    ``"train"`` has 50,000 images, ``"test"`` 10,000, as ``(N, 3, 32, 32)`` float32 normalised per channel.
    Get the data from https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz ("CIFAR-10 binary version")
    and extract it; the Python (pickle) version is deliberately not read.

    Example:
        >>> cifar10("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: CIFAR-10 binary files not found under /nonexistent...
    """
    _check_split(split, ("train", "test"))
    root = Path(root)
    folder = root / "cifar-10-batches-bin" if (root / "cifar-10-batches-bin").is_dir() else root
    paths = [folder / name for name in _CIFAR_FILES[split]]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 binary files not found under {root} (missing {', '.join(missing)}). Download the "
            "binary version from https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz, extract it and pass "
            "the folder containing cifar-10-batches-bin (or that folder itself) as root."
        )
    images, labels = [], []
    for path in paths:
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0:  # an interrupted download or extraction; else an opaque numpy error below
            raise ValueError(
                f"{path} is empty; extract cifar-10-binary.tar.gz again (or download it again if the archive "
                "is incomplete)"
            )
        if raw.size % _CIFAR_RECORD:
            raise ValueError(f"{path}: {raw.size} bytes is not a multiple of the {_CIFAR_RECORD}-byte record")
        records = raw.reshape(-1, _CIFAR_RECORD)
        if records[:, 0].max() > 9:
            raise ValueError(f"{path}: label byte > 9; is this the CIFAR-100 binary version?")
        labels.append(records[:, 0])
        images.append(records[:, 1:].reshape(-1, 3, 32, 32))
    return _to_dataset(np.concatenate(images), np.concatenate(labels), CIFAR10_MEAN, CIFAR10_STD)


def npz(path: str | Path, split: str = "train") -> TensorDataset:
    """Labelled images of your own from a NumPy ``.npz`` file, normalised per channel.

    The file holds ``x_train`` and ``y_train`` (and, for ``split="test"``, ``x_test`` and ``y_test``): images as
    ``(N, H, W)`` or channels-first ``(N, C, H, W)``, ``uint8`` (0-255) or float (both splits alike), and integer
    labels ``0 .. K-1`` (at least two classes) with every class in ``y_train``, of shape ``(N,)`` or ``(N, 1)``
    (as Keras gives them).
    Channels-last images ``(N, H, W, C)`` are refused with the transpose that fixes them, not read as ``C = H``
    channels. A shape that reads either way (dims 1 and 3 both 1, 3 or 4 and not both 1: ``(N, 3, 32, 3)`` is
    32 x 3 RGB or 3 x 32 RGB) is refused too, unless the file says ``layout="NCHW"`` (an extra array:
    ``np.savez(path, ..., layout="NCHW")``), which reads every image array channels-first as stored. It is read
    with ``allow_pickle=False``, so a file cannot run code. Both splits are normalised with the per-channel mean
    and standard deviation of ``x_train`` (after scaling ``uint8`` to 0-1), so training, evaluation and export
    see the same preprocessing. Write one with ``np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)``.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "toy.npz")
        >>> np.savez(path, x_train=np.zeros((4, 5, 5), np.uint8), y_train=np.array([0, 1, 0, 1]))
        >>> tuple(npz(path).tensors[0].shape)
        (4, 1, 5, 5)
    """
    split = _check_split(split, ("train", "test"))
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such data file; write one with np.savez(path, x_train=..., y_train=...)"
        )
    if not zipfile.is_zipfile(path):  # else np.load would try the file as a pickle (and refuse it)
        raise ValueError(
            f"{path} is not a NumPy .npz file; write one with np.savez(path, x_train=..., y_train=...)"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as exc:  # object arrays need pickle, which is refused
        raise ValueError(
            f"{path}: cannot be read without pickle ({exc}); store plain numeric arrays"
        ) from None
    # BadZipFile: a member fails its CRC check (a damaged copy)
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path} is not a NumPy .npz file, or is damaged ({exc}); write it again") from None
    # np.load gives a member that is not an .npy array (a zip of other files renamed .npz) as raw bytes
    not_arrays = sorted(k for k, v in arrays.items() if not isinstance(v, np.ndarray))
    if not_arrays:
        raise ValueError(
            f"{path}: not NumPy arrays: {', '.join(not_arrays)}; write the file with "
            "np.savez(path, x_train=..., y_train=...)"
        )
    channels_first = _npz_layout(path, arrays)
    x_train = _npz_images(path, arrays, "x_train", channels_first)
    y_train = _npz_labels(path, arrays, "y_train", len(x_train))
    classes = np.unique(y_train)
    if not np.array_equal(classes, np.arange(len(classes))):
        # Else the class count (max label + 1) would include classes with no image, silently.
        raise ValueError(
            f"{path}: y_train labels must be 0 .. K-1 with every class present, got {len(classes)} classes "
            f"{_preview(classes)}; renumber them: classes, y_train = np.unique(y_train, return_inverse=True)"
        )
    if len(classes) < 2:  # every subnet would score 100%: a search would have nothing to rank
        raise ValueError(
            f"{path}: y_train has a single class ({int(classes[0])}); a classifier needs at least two (are these "
            "the right labels?)"
        )
    x, y = x_train, y_train
    if split == "test":
        missing = [k for k in ("x_test", "y_test") if k not in arrays]
        if missing:
            raise ValueError(
                f"{path} holds no test split (no {' or '.join(missing)}): add x_test and y_test arrays, or "
                "evaluate on a split of x_train"
            )
        x = _npz_images(path, arrays, "x_test", channels_first)
        if x.shape[1:] != x_train.shape[1:]:
            raise ValueError(
                f"{path}: x_test images are {x.shape[1:]}, x_train images {x_train.shape[1:]}; they must match"
            )
        if (x.dtype == np.uint8) != (x_train.dtype == np.uint8):  # both are scaled by x_train's rule
            raise ValueError(
                f"{path}: x_test is {x.dtype} but x_train {x_train.dtype}; store both as uint8 (0-255) or both "
                "as float, on the same scale"
            )
        y = _npz_labels(path, arrays, "y_test", len(x))
        unseen = np.setdiff1d(y, classes)
        if unseen.size:
            raise ValueError(
                f"{path}: y_test has labels {_preview(unseen)} that y_train lacks (classes 0 .. "
                f"{len(classes) - 1}); drop those test images or add training images of those classes"
            )
    scale = 255.0 if x_train.dtype == np.uint8 else 1.0
    reference = x_train.astype(np.float64) / scale
    mean = reference.mean(axis=(0, 2, 3))
    std = np.maximum(reference.std(axis=(0, 2, 3)), 1e-6)
    return _to_dataset(x, y, tuple(mean.tolist()), tuple(std.tolist()), scale=scale)


def _npz_layout(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    """Whether the file declares its images channels-first (``layout="NCHW"``); without it the shape decides."""
    if "layout" not in arrays:
        return False
    layout = arrays["layout"]
    if layout.shape != () or layout.dtype.kind != "U" or str(layout) != "NCHW":
        got = repr(layout.item()) if layout.shape == () else f"an array of shape {layout.shape}"
        raise ValueError(
            f"{path}: layout must be the string 'NCHW' (images stored channels-first), got {got}; "
            "store channels-last images as x.transpose(0, 3, 1, 2) and save layout='NCHW'"
        )
    return True


def _npz_images(
    path: Path, arrays: dict[str, np.ndarray], key: str, channels_first: bool = False
) -> np.ndarray:
    """The images ``key`` as ``(N, C, H, W)``; ``channels_first``: the file said so (``layout="NCHW"``)."""
    if key not in arrays:
        raise ValueError(
            f"{path} lacks {key}; expected arrays x_train, y_train (and x_test, y_test), got {sorted(arrays)}"
        )
    x = arrays[key]
    if len(x) == 0:
        raise ValueError(f"{path}: {key} holds no images (shape {x.shape})")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"{path}: {key} must be images (N, H, W) or (N, C, H, W), got shape {x.shape}")
    channel_counts = (1, 3, 4)  # gray, RGB, RGBA
    # only a stored 4-D array has a channel axis to guess: (N, H, W) became (N, 1, H, W) above
    if not channels_first and arrays[key].ndim == 4 and x.shape[-1] in channel_counts:
        if x.shape[1] not in channel_counts:  # e.g. Keras's CIFAR-10
            raise ValueError(
                f"{path}: {key} looks channels-last (N, H, W, C) {x.shape}; store it channels-first (N, C, H, W): "
                f"{key}.transpose(0, 3, 1, 2)"
            )
        if x.shape[1] != 1 or x.shape[-1] != 1:
            # Both readings are images (N, 3, 32, 3): 32 x 3 RGB, or 3 x 32 RGB whose rows would be read as
            # channels. Both 1 is not refused: one channel either way, only H and W swap.
            raise ValueError(
                f"{path}: {key} {x.shape} reads as channels-first (N, C, H, W) or channels-last (N, H, W, C); "
                f"if it is channels-first, save the file with layout='NCHW' (np.savez(path, ..., layout='NCHW')); "
                f"if channels-last, store {key}.transpose(0, 3, 1, 2) and save layout='NCHW'"
            )
    if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"{path}: {key} must be uint8 or float images, got {x.dtype}")
    if x.dtype != np.uint8 and not np.isfinite(x).all():
        # one NaN pixel turns every loss and BN statistic it reaches into NaN, far from where it came from
        bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
        raise ValueError(
            f"{path}: {key} has NaN or infinite pixels in {len(bad)} images (first: index {bad[0]}); fix or drop them"
        )
    return x


def _npz_labels(path: Path, arrays: dict[str, np.ndarray], key: str, n: int) -> np.ndarray:
    if key not in arrays:
        raise ValueError(f"{path} lacks {key} (integer labels, one per image)")
    y = arrays[key]
    if y.ndim == 2 and y.shape[1] == 1:  # Keras's datasets give labels as (N, 1)
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        one_hot = y.ndim == 2 and len(y) == n and y.shape[1] > 1
        raise ValueError(
            f"{path}: {key} must be {n} non-negative integer labels, one per image; got dtype {y.dtype}, "
            f"shape {y.shape}" + (f" (one-hot? save {key}.argmax(1))" if one_hot else "")
        )
    return y


def _preview(values: np.ndarray, limit: int = 6) -> str:
    shown = ", ".join(str(int(v)) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def train_val_split(
    dataset: TensorDataset, val_fraction: float = 0.1, seed: int = 0
) -> tuple[TensorDataset, TensorDataset]:
    """Split a labelled ``TensorDataset`` into (train, val), stratified by label, reproducibly from ``seed``.

    Each class contributes ``round(val_fraction * count)`` examples to the validation part, but at least one
    when the class has two or more examples and at most ``count - 1``: every class keeps a training example (a
    class of one example stays in training).

    Example:
        >>> train, val = train_val_split(digits(), 0.2, seed=0)
        >>> len(train) + len(val), len(val)
        (1797, 359)
    """
    if not isinstance(dataset, TensorDataset) or len(dataset.tensors) < 2:
        raise TypeError("train_val_split needs a TensorDataset of (inputs, labels, ...)")
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction={val_fraction!r} must lie strictly between 0 and 1")
    labels = dataset.tensors[1].cpu().numpy()
    rng = np.random.default_rng(seed)
    val_idx = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        # At least one of each class in val, but never the whole class: val_fraction=0.97 of 20 examples
        # took all of them, leaving an empty training part (and a tiny class would vanish from training).
        n_val = min(max(round(float(val_fraction) * len(idx)), 1), len(idx) - 1)
        val_idx.append(idx[:n_val])
    val = np.sort(np.concatenate(val_idx))
    mask = np.ones(len(labels), dtype=bool)
    mask[val] = False
    train = np.flatnonzero(mask)
    tr, va = torch.from_numpy(train), torch.from_numpy(val)
    return TensorDataset(*(t[tr] for t in dataset.tensors)), TensorDataset(*(t[va] for t in dataset.tensors))
