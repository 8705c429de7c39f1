"""``otgen train`` on bad files, configs and flags: one line ``otgen: error: ...`` naming
the problem, exit code 2, no traceback and no run started."""

from __future__ import annotations

import re

import numpy as np
import pytest

from otgen.cli.main import main

FILES = {
    "empty.csv": "",
    "ragged.csv": "1,2\n3,4\n5\n",
    "nan.csv": "1,2\n3,4\nnan,5\n",
    "three.csv": "1,2,3\n4,5,6\n",
    "huge.csv": "1e30,2e30\n3e30,4\n5,6e30\n",
    "text.csv": "a,b\nx,y\n",
    "unknown.json": '{"steps": 10, "bogus": 1}',
    "neg.json": '{"steps": -5}',
    "typ.json": '{"lr": "fast"}',
    "arr.json": "[1, 2]",
    "bad.json": "{bad",
    "method.json": '{"method": "magic"}',
}

CASES = {
    "missing file": (["--data", "{t}/missing.csv"], r"missing\.csv: no such file"),
    "empty file": (["--data", "{t}/empty.csv"], r"empty\.csv: the file is empty"),
    "malformed csv": (["--data", "{t}/ragged.csv"], r"malformed CSV, line 3 has 1 column"),
    "non-numeric csv": (["--data", "{t}/text.csv"], r"non-numeric value 'x' at line 2"),
    "nan rows": (["--data", "{t}/nan.csv"], r"1 of 3 row\(s\) have NaN/inf"),
    "wrong dims": (["--data", "{t}/three.csv"], r"different dimensions.*gaussian:D"),
    "huge magnitudes": (["--data", "{t}/huge.csv"], r"overflow squared distances.*rescale"),
    "complex npy": (["--data", "{t}/complex.npy"], r"complex\.npy"),
    "object npy": (["--data", "{t}/object.npy"], r"object\.npy"),
    "unknown config key": (["--config", "{t}/unknown.json"], r"unknown config key.*'bogus'"),
    "impossible config value": (["--config", "{t}/neg.json"], r"`steps` must be >= 1, got -5"),
    "config wrong type": (["--config", "{t}/typ.json"], r"`lr` must be a positive number"),
    "config not an object": (["--config", "{t}/arr.json"], r"must hold a JSON object"),
    "config invalid json": (["--config", "{t}/bad.json"], r"not valid JSON"),
    "config bad method": (["--config", "{t}/method.json"], r"method.*'magic'"),
    "zero batch": (["--batch-size", "0"], r"--batch-size: must be an integer >= 1"),
    "negative lr": (["--lr", "-1"], r"--lr: must be a finite number > 0"),
    "ema out of range": (["--ema", "2"], r"`ema` must be in \[0, 1\)"),
    "unknown toy parameter": (["--data-params", '{"bogus": 1}'], r"no parameter\(s\) bogus"),
    "bad toy parameter": (["--data-params", '{"noise": -1}'], r"`noise` must be"),
    "unknown toy": (["--data", "moonz"], r"moonz"),
    "bad gaussian dim": (["--data", "gaussian:0"], r"integer >= 1"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_train_rejects_bad_input_in_one_line(tmp_path, capsys, case):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    np.save(tmp_path / "complex.npy", np.ones((5, 2), dtype=np.complex128))
    np.save(tmp_path / "object.npy", np.array([{"a": 1}] * 3, dtype=object),
            allow_pickle=True)
    args, pattern = CASES[case]
    out = tmp_path / "run"
    argv = ["train", *[a.replace("{t}", str(tmp_path)) for a in args], "--steps", "3", "--no-eval",
            "--out", str(out)]
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (case, captured.err)
    assert len(lines) == 1 and lines[0].startswith("otgen: error: "), lines
    assert "Traceback" not in captured.err
    assert re.search(pattern, lines[0]), lines[0]
    assert not (out / "checkpoint").exists()  # no training happened
