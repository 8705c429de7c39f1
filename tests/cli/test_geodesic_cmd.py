"""`otgen train --model vae` and `otgen geodesic` end to end on a tiny run."""

from __future__ import annotations

import json

import pytest

from otgen.cli.main import main

TINY = ["train", "--model", "vae", "--data", "digits", "--latent-dim", "2", "--steps", "300",
        "--var-steps", "100",
        "--hidden", "32", "--depth", "1"]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("vae") / "run"
    assert main([*TINY, "--out", str(run)]) == 0
    return run


def test_train_vae_writes_a_run(vae_run):
    for name in ("config.json", "metrics.json", "model.safetensors", "loss.png"):
        assert (vae_run / name).exists(), name
    metrics = json.loads((vae_run / "metrics.json").read_text())
    assert metrics["steps"] == 300 + 100 and metrics["std_far"] > metrics["std_at_data"]
    assert all(isinstance(v, int | float) for v in metrics.values())


def test_geodesic_command(vae_run, tmp_path, capsys):
    out = tmp_path / "geo"
    argv = ["geodesic", "--run", str(vae_run), "--pairs", "2", "--segments", "4",
            "--grid", "12", "--no-shooting", "--out", str(out)]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for name in ("latent.png", "decoded_paths.png", "metrics.json", "config.json"):
        assert (out / name).exists(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m == {k: v for k, v in printed.items() if k != "out"}
    for key in ("geodesic_length_mean", "straight_length_mean", "length_ratio_mean",
                "energy_seconds"):
        assert isinstance(m[key], float)
    assert "shooting_seconds" not in m  # --no-shooting (shooting: tests/geometry)
    # the geodesic is no longer than the straight line under the same metric
    assert m["length_ratio_mean"] <= 1.0 + 1e-6
    for k in range(2):
        assert m[f"geodesic_length_{k}"] <= m[f"straight_length_{k}"] * (1 + 1e-6)


def test_bad_input_gives_one_line(vae_run, tmp_path, capsys):
    flow = tmp_path / "flow"
    flow.mkdir()
    (flow / "config.json").write_text('{"method": "otcfm"}')
    cases = [
        ["geodesic", "--run", str(tmp_path / "missing")],
        ["geodesic", "--run", str(flow)],
        ["geodesic", "--run", str(vae_run), "--pairs", "0"],
        ["train", "--model", "vae", "--method", "cfm", "--out", str(tmp_path / "a")],
        ["train", "--model", "vae", "--data", "moons", "--out", str(tmp_path / "b")],
        ["train", "--latent-dim", "2", "--out", str(tmp_path / "c")],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("otgen: error:"), (argv, err)
