"""IDX reader/writer and the MNIST loader, on small IDX files written by the test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from otgen.data.mnist import find_mnist_files, load_idx, load_mnist, write_idx


def _mnist_dir(tmp_path, n=7, gz=False, side=28, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    for split in ("train", "t10k"):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte{suffix}", images)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte{suffix}", labels)
    return images, labels


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32,
                                   np.float64])
def test_idx_round_trip_is_exact(tmp_path, dtype):
    rng = np.random.default_rng(1)
    arr = (rng.normal(size=(3, 4, 5)) * 50).astype(dtype)
    for name in ("a.idx", "a.idx.gz"):
        back = load_idx(write_idx(tmp_path / name, arr))
        assert back.dtype == arr.dtype and back.shape == arr.shape
        assert np.array_equal(back, arr)


def test_idx_header_is_big_endian_as_in_the_spec(tmp_path):
    # magic 0x00000801 (ubyte, 1-d), size 3, payload 7 1 4
    (tmp_path / "l").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 1, 4]))
    assert load_idx(tmp_path / "l").tolist() == [7, 1, 4]
    # int16 values stored big-endian: 0x0102 = 258
    (tmp_path / "s").write_bytes(bytes([0, 0, 0x0B, 1, 0, 0, 0, 1, 1, 2]))
    assert load_idx(tmp_path / "s").tolist() == [258]


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_values_scaling_and_labels(tmp_path, gz):
    images, labels = _mnist_dir(tmp_path, gz=gz)
    x, y = load_mnist(tmp_path, "train", "[-1,1]", dtype=torch.float64)
    assert x.shape == (7, 784) and y.dtype == torch.int64
    assert torch.allclose(x, torch.from_numpy(images.reshape(7, -1) * (2 / 255) - 1.0))
    assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))
    x01, _ = load_mnist(tmp_path, "test", "[0,1]")
    assert x01.dtype == torch.float32 and float(x01.min()) >= 0 and float(x01.max()) <= 1
    assert torch.allclose(x01.double(), torch.from_numpy(images.reshape(7, -1) / 255.0),
                          atol=1e-7)


def test_mirror_names_with_dots_are_found(tmp_path):
    _mnist_dir(tmp_path, n=2)
    for split in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            src = tmp_path / f"{split}-{kind}-ubyte"
            src.rename(tmp_path / f"{split}-{kind.replace('-idx', '.idx')}-ubyte")
    img, lab = find_mnist_files(tmp_path, "train")
    assert img.name == "train-images.idx3-ubyte" and lab.name == "train-labels.idx1-ubyte"


def test_bad_files_give_clear_errors(tmp_path):
    _mnist_dir(tmp_path, n=3)
    bad = tmp_path / "trunc"
    bad.write_bytes((tmp_path / "train-images-idx3-ubyte").read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_idx(bad)
    (tmp_path / "magic").write_bytes(b"\x1f\x00\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="not an IDX file"):
        load_idx(tmp_path / "magic")
    (tmp_path / "code").write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]))
    with pytest.raises(ValueError, match="unknown IDX element type 0x07"):
        load_idx(tmp_path / "code")
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(2, dtype=np.uint8))
    with pytest.raises(ValueError, match="holds 3 images but .* holds 2 labels"):
        load_mnist(tmp_path, "train")
    with pytest.raises(ValueError, match="not a directory"):
        load_mnist(tmp_path / "nowhere")
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ValueError, match="missing t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path, "test")
