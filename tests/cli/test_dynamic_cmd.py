"""``otgen dynamic``: run directories of the three methods, their numbers against static
OT, and user errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from otgen.cli.main import main

PNG = b"\x89PNG\r\n\x1a\n"
GIF = b"GIF89a"


def run(capsys, *args):
    code = main(["dynamic", *map(str, args)])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def check_run_dir(path):
    for name in ("paths.png", "velocity.png"):
        assert (path / name).read_bytes()[:8] == PNG
    assert (path / "interpolation.gif").read_bytes()[:6] == GIF
    metrics = json.loads((path / "metrics.json").read_text())
    config = json.loads((path / "config.json").read_text())
    for key in ("action", "w2_squared", "w2_squared_static", "hj_residual", "curl"):
        assert key in metrics
    assert config["command"] == "dynamic"
    return metrics


def test_mccann_action_is_half_static_w2(tmp_path, capsys):
    code, out, err = run(capsys, "--method", "mccann", "--source", "gaussian", "--target",
                         "moons", "--n", 64, "--frames", 5, "--out", tmp_path / "m")
    assert code == 0, err
    m = check_run_dir(tmp_path / "m")
    assert json.loads(out) == m
    assert m["w2_squared"] == pytest.approx(m["w2_squared_static"], rel=1e-10)


def test_grid_from_clouds_matches_static_w2(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.normal(size=(3000, 2)) * 0.5)
    np.save(tmp_path / "b.npy", rng.normal(size=(3000, 2)) * 0.5 + np.array([2.0, 0.0]))
    code, out, err = run(capsys, "--method", "grid", "--source", tmp_path / "a.npy",
                         "--target", tmp_path / "b.npy", "--grid", 16, "--samples", 3000,
                         "--frames", 5, "--out", tmp_path / "g")
    assert code == 0, err
    m = check_run_dir(tmp_path / "g")
    assert m["w2_squared"] == pytest.approx(m["w2_squared_static"], rel=0.05)
    assert m["w2_squared"] == pytest.approx(4.0, rel=0.1)  # a translation by (2, 0)


def test_action_writes_field_and_diagnostics(tmp_path, capsys):
    code, out, err = run(capsys, "--method", "action", "--source", "gaussian", "--target",
                         "8gaussians", "--n", 64, "--iterations", 20, "--frames", 5,
                         "--parametrisation", "free", "--out", tmp_path / "a")
    assert code == 0, err
    m = check_run_dir(tmp_path / "a")
    assert (tmp_path / "a" / "field.safetensors").stat().st_size > 0
    assert m["curl"] is not None and m["curl"] >= 0 and m["hj_residual"] is None
    assert m["w2_squared"] == pytest.approx(2 * m["action"])


def test_user_errors_exit_2(tmp_path, capsys):
    code, _, err = run(capsys, "--method", "grid", "--source", "gaussian:3", "--target",
                       "gaussian:3", "--out", tmp_path / "x")
    assert code == 2 and "1-D or 2-D" in err
    code, _, err = run(capsys, "--source", "gaussian:3", "--target", "moons")
    assert code == 2 and "dimension" in err
    code, _, err = run(capsys, "--source", "mooons", "--target", "moons")
    assert code == 2 and "did you mean" in err
