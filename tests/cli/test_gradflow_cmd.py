"""``otgen gradflow`` end to end: run directories, closed-form W2, monotone energy, errors."""

from __future__ import annotations

import json

import pytest
import torch

from otgen.cli.main import main


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


def test_jko_kl_writes_the_run_directory_and_tracks_the_ou_closed_form(tmp_path, capsys):
    run = tmp_path / "jko"
    argv = ["gradflow", "--energy", "kl", "--scheme", "jko", "--tau", "0.2", "--steps", "5",
            "--grid", "101", "--out", str(run)]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for name in ("config.json", "metrics.json", "frames.png", "energy.png", "flow.gif"):
        assert (run / name).stat().st_size > 0, name
    m = _metrics(run)
    assert m["energy_monotone"] == 1 and m["converged"] == 1
    assert [k for k in m if k.startswith("energy_0")] == [f"energy_{k:04d}" for k in range(6)]
    assert m["w2_0000"] < 0.02 and m["w2_closed_form"] < 0.1  # O(tau) at tau = 0.2
    assert summary["w2_closed_form"] == m["w2_closed_form"]
    assert (run / "flow.gif").read_bytes()[:6] == b"GIF89a"


def test_particles_and_langevin_schemes(tmp_path):
    run = tmp_path / "p"
    assert main(["gradflow", "--energy", "interaction", "--scheme", "particles", "--n", "200",
                 "--steps", "30", "--tau", "0.02", "--no-gif", "--out", str(run)]) == 0
    m = _metrics(run)
    assert m["energy_monotone"] == 1 and m["w2_closed_form"] < 0.1  # aggregation closed form
    run = tmp_path / "l"
    assert main(["gradflow", "--energy", "entropy", "--scheme", "langevin", "--n", "300",
                 "--steps", "50", "--no-gif", "--out", str(run)]) == 0
    m = _metrics(run)
    assert m["w2_closed_form"] < 0.15  # heat closed form, sampling floor included
    assert (run / "frames.png").exists() and not (run / "flow.gif").exists()


def test_quantile_jko_porous_barenblatt(tmp_path):
    run = tmp_path / "q"
    assert main(["gradflow", "--energy", "porous", "--scheme", "jko", "--jko-method",
                 "quantile", "--n", "80", "--tau", "0.05", "--steps", "6", "--no-gif",
                 "--out", str(run)]) == 0
    m = _metrics(run)
    assert m["energy_monotone"] == 1 and m["w2_closed_form"] < 0.03


def test_bad_flags_give_one_line(tmp_path, capsys):
    cases = [
        ["gradflow", "--energy", "porous", "--scheme", "langevin", "--out", str(tmp_path / "a")],
        ["gradflow", "--init", "barenblatt", "--energy", "kl", "--out", str(tmp_path / "b")],
        ["gradflow", "--jko-method", "quantile", "--dim", "2", "--out", str(tmp_path / "c")],
        ["gradflow", "--energy", "porous", "--m", "0.5", "--out", str(tmp_path / "d")],
        ["gradflow", "--energy", "nope"],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("otgen: error:"), (argv, err)
