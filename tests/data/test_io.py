"""Point-cloud loaders: formats, weights, and one clear ValueError per bad input."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from otgen.data.io import load_cloud, load_weights, sibling_weights_path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "clouds"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- CSV


def test_csv_without_header(tmp_path):
    pts, w = load_cloud(write(tmp_path / "c.csv", "0,1\n2.5,-3\n1e-3,4\n"))
    assert pts.dtype == torch.float64 and pts.shape == (3, 2)
    torch.testing.assert_close(pts, torch.tensor([[0.0, 1.0], [2.5, -3.0], [1e-3, 4.0]]).double())
    assert w is None


def test_csv_with_header_no_weights(tmp_path):
    pts, w = load_cloud(write(tmp_path / "c.csv", "x,y,z\n1,2,3\n4,5,6\n"))
    assert pts.tolist() == [[1, 2, 3], [4, 5, 6]] and w is None


@pytest.mark.parametrize("name", ["weight", "w", "Weight", " W "])
def test_csv_weight_column_anywhere(tmp_path, name):
    f = write(tmp_path / "c.csv", f"x,{name},y\n1,0.5,2\n3,1.5,4\n")
    pts, w = load_cloud(f)
    assert pts.tolist() == [[1, 2], [3, 4]]
    assert w.tolist() == [0.5, 1.5]  # raw, not normalised


def test_csv_skips_blank_and_comment_lines_and_keeps_dtype(tmp_path):
    f = write(tmp_path / "c.csv", "# a comment\nx,y\n\n1,2\n# more\n3,4\n\n")
    pts, _ = load_cloud(f, dtype=torch.float32)
    assert pts.dtype == torch.float32 and pts.tolist() == [[1, 2], [3, 4]]


def test_csv_one_dimensional_cloud(tmp_path):
    pts, _ = load_cloud(write(tmp_path / "c.csv", "x\n1\n2\n3\n"))
    assert pts.shape == (3, 1)


def test_shipped_example():
    x, a = load_cloud(EXAMPLES / "source.csv")
    y, b = load_cloud(EXAMPLES / "target.csv")
    assert x.shape == (300, 2) and a is None
    assert y.shape == (400, 2) and b.shape == (400,) and bool((b > 0).all())


# --------------------------------------------------------------------------- .npy


def test_npy_roundtrip(tmp_path):
    arr = np.random.default_rng(0).normal(size=(7, 3))
    np.save(tmp_path / "c.npy", arr)
    pts, w = load_cloud(tmp_path / "c.npy")
    assert w is None and pts.dtype == torch.float64
    np.testing.assert_array_equal(pts.numpy(), arr)


def test_npy_integer_array_is_cast(tmp_path):
    np.save(tmp_path / "c.npy", np.arange(6).reshape(3, 2))
    pts, _ = load_cloud(str(tmp_path / "c.npy"))
    assert pts.dtype == torch.float64 and pts.tolist() == [[0, 1], [2, 3], [4, 5]]


def test_npy_sibling_weights(tmp_path):
    np.save(tmp_path / "c.npy", np.zeros((3, 2)))
    np.save(sibling_weights_path(tmp_path / "c.npy"), np.array([1.0, 2.0, 3.0]))
    assert sibling_weights_path(tmp_path / "c.npy").name == "c.weights.npy"
    _, w = load_cloud(tmp_path / "c.npy")
    assert w.tolist() == [1.0, 2.0, 3.0]


def test_npy_explicit_weights_csv_and_npy(tmp_path):
    np.save(tmp_path / "c.npy", np.zeros((3, 2)))
    _, w = load_cloud(tmp_path / "c.npy", weights_path=write(tmp_path / "w.csv", "w\n1\n0\n2\n"))
    assert w.tolist() == [1.0, 0.0, 2.0]
    np.save(tmp_path / "w.npy", np.array([[1.0], [1.0], [1.0]]))
    _, w = load_cloud(tmp_path / "c.npy", weights_path=tmp_path / "w.npy")
    assert w.tolist() == [1.0, 1.0, 1.0]
    assert load_weights(tmp_path / "w.npy").shape == (3,)


def test_npy_extra_column_is_not_guessed_as_weights(tmp_path):
    np.save(tmp_path / "c.npy", np.ones((4, 3)))
    pts, w = load_cloud(tmp_path / "c.npy")
    assert pts.shape == (4, 3) and w is None


def test_pickled_object_npy_is_rejected_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"

    class Boom:
        def __reduce__(self):
            return (Path.touch, (marker,))

    np.save(tmp_path / "o.npy", np.array([Boom(), 1], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"o\.npy.*Python objects.*never unpickles"):
        load_cloud(tmp_path / "o.npy")
    assert not marker.exists()


def test_raw_pickle_with_npy_suffix_is_rejected(tmp_path):
    marker = tmp_path / "unpickled"

    class Boom:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (tmp_path / "p.npy").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ValueError, match=r"p\.npy: not a \.npy file"):
        load_cloud(tmp_path / "p.npy")
    assert not marker.exists()


def test_structured_npy_is_rejected(tmp_path):
    arr = np.zeros(3, dtype=[("x", "f8"), ("w", "f8")])
    np.save(tmp_path / "s.npy", arr)
    with pytest.raises(ValueError, match="structured arrays"):
        load_cloud(tmp_path / "s.npy")


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
def test_npy_wrong_rank(tmp_path, shape):
    np.save(tmp_path / "r.npy", np.zeros(shape))
    with pytest.raises(ValueError, match=r"r\.npy: a point cloud must be a 2-D array"):
        load_cloud(tmp_path / "r.npy")


def test_npy_nan_rows_report_count_and_first_row(tmp_path):
    arr = np.zeros((6, 2))
    arr[2, 1] = np.nan
    arr[4, 0] = np.inf
    np.save(tmp_path / "n.npy", arr)
    with pytest.raises(
        ValueError, match=r"2 of 6 row\(s\) have NaN/inf coordinates, first at row 2"
    ):
        load_cloud(tmp_path / "n.npy")


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("1,2\n3\n", r"malformed CSV, line 2 has 1 column\(s\) but the first row has 2"),
        ("x,y\n1,2\n3,4,5\n", r"line 3 has 3 column\(s\) but the header has 2"),
        ("1,2\n3,abc\n", r"non-numeric value 'abc' at line 2, column 2"),
        ("x,y\n1,2\nfoo,4\n", r"non-numeric value 'foo' at line 3, column 1 \('x'\)"),
        ("1,2\n3,\n", r"an empty cell at line 2, column 2"),
        ("x,y\n", "header but no data rows"),
        ("\n\n# only a comment\n", "holds no data"),
        (
            "x,y\n1,2\nnan,3\n4,5\n6,inf\n",
            r"2 of 4 row\(s\) have NaN/inf coordinates, first at line 3",
        ),
        ("x,w\n1,1\n2,-0.5\n3,-1\n", r"2 negative weight\(s\), first -0.5 at line 3"),
        ("x,w\n1,0\n2,0\n", "total mass 0"),
        ("x,w\n1,nan\n2,1\n", r"NaN/inf weights, first at line 2"),
        ("w,weight\n1,2\n", "2 weight columns"),
        ("weight\n1\n", "only column is the weight column"),
    ],
)
def test_bad_csv(tmp_path, text, pattern):
    f = write(tmp_path / "bad.csv", text)
    with pytest.raises(ValueError, match=pattern) as info:
        load_cloud(f)
    assert "bad.csv" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.csv: no such file"):
        load_cloud(tmp_path / "nope.csv")


@pytest.mark.parametrize("name", ["e.csv", "e.npy"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError, match=rf"{name}: the file is empty"):
        load_cloud(tmp_path / name)


@pytest.mark.parametrize("name", ["c.txt", "c.npz", "c"])
def test_unsupported_suffix(tmp_path, name):
    write(tmp_path / name, "1,2\n")
    with pytest.raises(ValueError, match="unsupported file type.*use one of .npy, .csv"):
        load_cloud(tmp_path / name)


def test_directory_is_rejected(tmp_path):
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(ValueError, match="not a regular file"):
        load_cloud(tmp_path / "d.csv")


def test_weights_length_mismatch(tmp_path):
    np.save(tmp_path / "c.npy", np.zeros((3, 2)))
    np.save(tmp_path / "w.npy", np.ones(4))
    with pytest.raises(ValueError, match=r"w\.npy: holds 4 weights but the cloud .*c\.npy has 3"):
        load_cloud(tmp_path / "c.npy", weights_path=tmp_path / "w.npy")


def test_weight_column_and_weights_file_conflict(tmp_path):
    f = write(tmp_path / "c.csv", "x,w\n1,1\n")
    with pytest.raises(ValueError, match="weight column and a weights file"):
        load_cloud(f, weights_path=write(tmp_path / "w.csv", "1\n"))


def test_negative_weights_in_weights_file(tmp_path):
    np.save(tmp_path / "c.npy", np.zeros((2, 2)))
    np.save(tmp_path / "w.npy", np.array([1.0, -2.0]))
    with pytest.raises(ValueError, match=r"w\.npy: 1 negative weight\(s\), first -2 at row 1"):
        load_cloud(tmp_path / "c.npy", weights_path=tmp_path / "w.npy")


def test_multicolumn_weights_csv_needs_a_name(tmp_path):
    np.save(tmp_path / "c.npy", np.zeros((2, 2)))
    with pytest.raises(ValueError, match="single column or a header naming"):
        load_cloud(tmp_path / "c.npy", weights_path=write(tmp_path / "w.csv", "1,2\n3,4\n"))


def test_non_float_dtype_argument(tmp_path):
    with pytest.raises(TypeError, match="floating torch dtype"):
        load_cloud(write(tmp_path / "c.csv", "1\n"), dtype=torch.int64)
