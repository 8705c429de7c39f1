"""``otgen ot``: results against POT, the run directory, the entry points, and bad inputs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import ot as pot
import pytest

from otgen.cli.main import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "clouds"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def clouds(tmp_path):
    """x: 12 points, CSV without header; y: 15 points, CSV with a weight column."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 2))
    y = rng.normal(size=(15, 2)) + np.array([2.0, 0.5])
    wy = rng.uniform(0.2, 2.0, size=15)
    fx, fy = tmp_path / "x.csv", tmp_path / "y.csv"
    np.savetxt(fx, x, delimiter=",", fmt="%.17g")
    np.savetxt(
        fy, np.column_stack([y, wy]), delimiter=",", fmt="%.17g", header="x,y,weight", comments=""
    )
    return fx, fy, x, y, np.full(12, 1 / 12), wy / wy.sum()


def run_ot(capsys, *args):
    """Run ``otgen ot`` in-process; returns (exit code, stdout, stderr)."""
    code = main(["ot", *map(str, args)])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_json_line(out: str) -> dict:
    lines = out.splitlines()
    assert len(lines) == 1, out
    return json.loads(lines[0])


# --------------------------------------------------------------------------- results


def test_exact_cost_equals_pot_emd2_with_weights(clouds, tmp_path, capsys):
    fx, fy, x, y, a, b = clouds
    code, out, err = run_ot(capsys, fx, fy, "--out", tmp_path / "run")
    assert code == 0, err
    res = one_json_line(out)
    expected = pot.emd2(a, b, pot.dist(x, y))
    assert res["cost"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert res["distance"] == pytest.approx(np.sqrt(expected), rel=1e-9)
    assert res["method"] == "exact" and res["converged"] is True
    assert (res["n"], res["m"]) == (12, 15)
    assert set(res) == {
        "cost",
        "distance",
        "converged",
        "n_iter",
        "seconds",
        "method",
        "n",
        "m",
        "marginal_error",
    }


@pytest.mark.parametrize(("cost", "p"), [("euclidean", 1.0), ("pnorm:3", 3.0)])
def test_exact_other_costs_and_distance_root(clouds, tmp_path, capsys, cost, p):
    fx, fy, x, y, a, b = clouds
    code, out, err = run_ot(capsys, fx, fy, "--cost", cost, "--out", tmp_path / "run")
    assert code == 0, err
    res = one_json_line(out)
    expected = pot.emd2(a, b, pot.dist(x, y, metric="euclidean") ** p)
    assert res["cost"] == pytest.approx(expected, rel=1e-9)
    assert res["distance"] == pytest.approx(expected ** (1 / p), rel=1e-9)


def test_npy_clouds_with_weight_files(tmp_path, capsys):
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(9, 3)), rng.normal(size=(7, 3))
    wa, wb = rng.uniform(0.1, 1, 9), rng.uniform(0.1, 1, 7)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "wa.npy", wa)
    np.save(tmp_path / "y.weights.npy", wb)  # sibling file, picked up automatically
    code, out, err = run_ot(
        capsys,
        tmp_path / "x.npy",
        tmp_path / "y.npy",
        "--x-weights",
        tmp_path / "wa.npy",
        "--out",
        tmp_path / "run",
    )
    assert code == 0, err
    expected = pot.emd2(wa / wa.sum(), wb / wb.sum(), pot.dist(x, y))
    assert one_json_line(out)["cost"] == pytest.approx(expected, rel=1e-9)
    assert (tmp_path / "run" / "coupling.png").read_bytes().startswith(PNG_MAGIC)  # image (d=3)


def test_sinkhorn_converges(clouds, tmp_path, capsys):
    fx, fy, x, y, a, b = clouds
    code, out, err = run_ot(
        capsys,
        fx,
        fy,
        "--method",
        "sinkhorn",
        "--eps",
        "0.1",
        "--tol",
        "1e-8",
        "--out",
        tmp_path / "run",
    )
    assert code == 0, err
    res = one_json_line(out)
    assert res["converged"] is True and res["method"] == "sinkhorn" and res["n_iter"] >= 1
    assert res["marginal_error"] <= 1e-6
    exact = pot.emd2(a, b, pot.dist(x, y))
    assert res["cost"] >= exact - 1e-9  # the entropic plan is feasible, so not below OT
    assert res["cost"] == pytest.approx(exact, rel=0.2)
    plan = np.load(tmp_path / "run" / "plan.npy")
    np.testing.assert_allclose(plan.sum(1), a, atol=1e-6)
    np.testing.assert_allclose(plan.sum(0), b, atol=1e-6)


# --------------------------------------------------------------------------- run directory


def test_run_directory_contents(clouds, tmp_path, capsys):
    fx, fy, x, y, a, b = clouds
    out_dir = tmp_path / "nested" / "run"
    code, out, err = run_ot(capsys, fx, fy, "--out", out_dir)
    assert code == 0, err
    printed = one_json_line(out)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics == printed
    config = json.loads((out_dir / "config.json").read_text())
    assert config["command"] == "ot" and config["method"] == "exact"
    assert config["x"] == str(fx) and config["y"] == str(fy) and config["out"] == str(out_dir)
    for key in ("eps", "eps_rel", "cost", "tol", "max_iter", "x_weights", "y_weights"):
        assert key in config

    if (out_dir / "plan_sparse.npy").exists():
        trip = np.load(out_dir / "plan_sparse.npy")
        assert trip.ndim == 2 and trip.shape[1] == 3 and trip.dtype == np.float64
        plan = np.zeros((12, 15))
        np.add.at(plan, (trip[:, 0].astype(int), trip[:, 1].astype(int)), trip[:, 2])
    else:
        plan = np.load(out_dir / "plan.npy")
    assert plan.shape == (12, 15)
    np.testing.assert_allclose(plan.sum(1), a, atol=1e-9)
    np.testing.assert_allclose(plan.sum(0), b, atol=1e-9)
    assert (plan * pot.dist(x, y)).sum() == pytest.approx(metrics["cost"], rel=1e-9)

    png = out_dir / "coupling.png"
    assert png.read_bytes().startswith(PNG_MAGIC)
    from matplotlib.image import imread

    assert imread(png).ndim == 3  # decodes as an image
    assert not [p for p in out_dir.iterdir() if p.name.endswith(".tmp")]  # atomic writes


def test_default_run_directory(clouds, tmp_path, capsys, monkeypatch):
    fx, fy, *_ = clouds
    monkeypatch.chdir(tmp_path)
    assert run_ot(capsys, fx, fy)[0] == 0
    assert run_ot(capsys, fx, fy)[0] == 0  # same second: a second, distinct directory
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all(r.name.startswith("ot-") for r in runs)
    assert all((r / "metrics.json").is_file() for r in runs)


def test_shipped_example(tmp_path, capsys):
    code, out, err = run_ot(
        capsys, EXAMPLES / "source.csv", EXAMPLES / "target.csv", "--out", tmp_path / "run"
    )
    assert code == 0, err
    res = one_json_line(out)
    assert (res["n"], res["m"]) == (300, 400)
    tgt = np.loadtxt(EXAMPLES / "target.csv", delimiter=",", skiprows=1)
    src = np.loadtxt(EXAMPLES / "source.csv", delimiter=",", skiprows=1)
    expected = pot.emd2(
        np.full(300, 1 / 300), tgt[:, 2] / tgt[:, 2].sum(), pot.dist(src, tgt[:, :2])
    )
    assert res["cost"] == pytest.approx(expected, rel=1e-9)


# --------------------------------------------------------------------------- entry points


def _console_script() -> str:
    exe = Path(sys.executable).parent / ("otgen.exe" if os.name == "nt" else "otgen")
    if not exe.exists():
        pytest.skip("the `otgen` console script is not installed (pip install -e .)")
    return str(exe)


def test_console_script_entry_point(clouds, tmp_path):
    fx, fy, x, y, a, b = clouds
    proc = subprocess.run(
        [_console_script(), "ot", str(fx), str(fy), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert one_json_line(proc.stdout)["cost"] == pytest.approx(
        pot.emd2(a, b, pot.dist(x, y)), rel=1e-9
    )
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_python_dash_m_error_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "otgen", "ot", str(tmp_path / "nope.csv"), str(tmp_path / "y.csv")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("otgen: error: ") and "Traceback" not in proc.stderr
    assert "nope.csv: no such file" in proc.stderr


def test_help_and_version_return_zero(capsys):
    assert main(["--help"]) == 0
    assert main(["ot", "--help"]) == 0
    assert main(["--version"]) == 0
    assert "otgen" in capsys.readouterr().out


# --------------------------------------------------------------------------- bad inputs


def _bad_inputs(tmp_path: Path, fx: Path, fy: Path) -> dict[str, tuple[list[str], str]]:
    t = tmp_path
    (t / "empty.csv").write_text("")
    (t / "ragged.csv").write_text("1,2\n3,4\n5\n")
    (t / "nan.csv").write_text("1,2\n3,4\nnan,5\n")
    (t / "three.csv").write_text("1,2,3\n4,5,6\n")
    (t / "neg.csv").write_text("x,y,weight\n1,2,1\n3,4,-1\n")
    (t / "zero.csv").write_text("x,y,weight\n1,2,0\n3,4,0\n")
    (t / "pts.txt").write_text("1,2\n")
    (t / "w.npy").write_bytes(b"")
    return {
        "missing file": ([str(t / "missing.csv"), str(fy)], r"missing\.csv: no such file"),
        "empty file": ([str(t / "empty.csv"), str(fy)], r"empty\.csv: the file is empty"),
        "ragged csv": (
            [str(fx), str(t / "ragged.csv")],
            r"ragged\.csv: malformed CSV, line 3 has 1 column",
        ),
        "nan row": (
            [str(t / "nan.csv"), str(fy)],
            r"nan\.csv: 1 of 3 row\(s\) have NaN/inf coordinates, first at line 3",
        ),
        "wrong dims": (
            [str(fx), str(t / "three.csv")],
            r"has dimension 2 but Y .*three\.csv\) has dimension 3",
        ),
        "negative weight": ([str(fx), str(t / "neg.csv")], r"neg\.csv: 1 negative weight"),
        "zero mass": ([str(fx), str(t / "zero.csv")], r"zero\.csv: the weights have total mass 0"),
        "txt suffix": ([str(t / "pts.txt"), str(fy)], r"pts\.txt: unsupported file type '\.txt'"),
        "eps zero": (
            [str(fx), str(fy), "--method", "sinkhorn", "--eps", "0"],
            r"argument --eps: must be a finite number > 0, got '0'",
        ),
        "eps negative": (
            [str(fx), str(fy), "--method", "sinkhorn", "--eps", "-1"],
            r"argument --eps: must be a finite number > 0, got '-1'",
        ),
        "eps not a number": (
            [str(fx), str(fy), "--method", "sinkhorn", "--eps=abc"],
            r"argument --eps: expected a number > 0, got 'abc'",
        ),
        "eps-rel zero": (
            [str(fx), str(fy), "--method", "sinkhorn", "--eps-rel", "0"],
            r"argument --eps-rel: must be a finite number > 0",
        ),
        "eps with exact": (
            [str(fx), str(fy), "--eps", "0.1"],
            r"--eps/--eps-rel only apply to --method sinkhorn",
        ),
        "bad method": (
            [str(fx), str(fy), "--method", "simplex"],
            r"argument --method: invalid choice: 'simplex'",
        ),
        "bad cost": ([str(fx), str(fy), "--cost", "cosine"], r"--cost 'cosine':"),
        "bad pnorm": ([str(fx), str(fy), "--cost", "pnorm:-1"], r"--cost 'pnorm:-1':"),
        "bad max-iter": (
            [str(fx), str(fy), "--max-iter", "0"],
            r"argument --max-iter: must be an integer >= 1",
        ),
        "empty weights file": (
            [str(fx), str(fy), "--x-weights", str(t / "w.npy")],
            r"w\.npy: the file is empty",
        ),
        "missing argument": ([str(fx)], r"the following arguments are required: Y"),
    }


BAD_CASES = [
    "missing file",
    "empty file",
    "ragged csv",
    "nan row",
    "wrong dims",
    "negative weight",
    "zero mass",
    "txt suffix",
    "eps zero",
    "eps negative",
    "eps not a number",
    "eps-rel zero",
    "eps with exact",
    "bad method",
    "bad cost",
    "bad pnorm",
    "bad max-iter",
    "empty weights file",
    "missing argument",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_exits_2_with_one_line(clouds, tmp_path, capsys, case):
    fx, fy, *_ = clouds
    argv, pattern = _bad_inputs(tmp_path, fx, fy)[case]
    out_dir = tmp_path / "run"
    code, out, err = run_ot(capsys, *argv, "--out", out_dir)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("otgen: error: "), err
    assert "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]
    assert not out_dir.exists()  # nothing written for a rejected run


def test_no_subcommand_is_an_error(capsys):
    assert main([]) == 2
    assert capsys.readouterr().err.startswith("otgen: error: ")
