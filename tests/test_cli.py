"""The fastgd command: train and compare on built-in and user data."""

from __future__ import annotations

import numpy as np
import pytest

import fastgd
from fastgd.cli import main


def test_train_on_digits_prints_metrics_and_saves(tmp_path, capsys):
    pytest.importorskip("sklearn")
    ckpt = tmp_path / "run.npz"
    assert main(["train", "--epochs", "3", "--no-progress", "--save", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "digits: 1438 train / 359 validation samples, 64 features, 10 classes" in out
    assert "epoch 3/3 loss=" in out and "val_accuracy=" in out
    line = next(r for r in out.splitlines() if r.startswith("adam "))
    assert float(line.split()[3]) > 0.8  # validation accuracy after 3 epochs
    with np.load(ckpt, allow_pickle=False) as z:
        assert "params/0" in z.files


def test_train_on_csv_regression_and_npz_classification(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.1
    csv = tmp_path / "reg.csv"
    np.savetxt(csv, np.c_[X, y], delimiter=",", header="a,b,c,y", comments="")
    assert main(["train", "--data", str(csv), "--model", "linear", "--epochs", "30",
                 "--optimizer", "sgd", "--lr", "0.05", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "regression" in out
    loss = float(next(r for r in out.splitlines() if r.startswith("sgd ")).split()[1])
    assert loss < 0.05
    npz = tmp_path / "cls.npz"
    np.savez(npz, X=X, y=(X[:, 0] > 0).astype(int))
    assert main(["train", "--data", str(npz), "--model", "logistic", "--epochs", "10",
                 "--lr", "0.05", "--schedule", "cosine", "--clip-norm", "5",
                 "--no-progress"]) == 0
    assert "2 classes" in capsys.readouterr().out


def test_compare_table_and_plot(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    png = tmp_path / "curves.png"
    assert main(["compare", "--optimizers", "gd,momentum,adam", "--epochs", "2",
                 "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    for name in ("gd", "momentum", "adam"):
        assert any(r.startswith(name + " ") for r in out.splitlines())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _files(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 2))
    files = {"DATA": (X, np.arange(10) % 2), "NAN": (np.where(X > 1, np.nan, X), np.arange(10) % 2),
             "Y0D": (X, np.array(3.0)), "YSTR": (X, np.array(["a", "b"] * 5)),
             "YINF": (X, np.r_[np.inf, np.ones(9)])}
    paths = {}
    for key, (x, y) in files.items():
        paths[key] = tmp_path / f"{key.lower()}.npz"
        np.savez(paths[key], X=x, y=y)
    csv = tmp_path / "nan.csv"
    csv.write_text("a,b,y\n1,2,0\n3,nan,1\n5,6,0\n")
    paths["NANCSV"] = csv
    paths["NOFOLDER"] = tmp_path / "missing" / "out.png"
    paths["FOLDER"] = tmp_path
    return paths


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--data", "nowhere.txt"], "unknown data"),
    (["train", "--data", "missing.npz"], "No such file"),
    (["compare", "--optimizers", "gd,bogus", "--data", "DATA"], "unknown optimizer"),
    (["train", "--model", "linear", "--data", "DATA"], "linear regression needs"),
    (["train", "--epochs", "0", "--data", "DATA"], "--epochs must be >= 1"),
    (["train", "--data", "NAN"], "2 cells are NaN or infinite (rows 3, 9)"),
    (["train", "--data", "NANCSV"], "1 cells are NaN or infinite (rows 1)"),
    (["train", "--data", "YINF"], "cells are NaN or infinite"),
    (["train", "--data", "Y0D"], "y must be 1-D, one target per row, got shape ()"),
    (["train", "--data", "YSTR", "--task", "regression"], "regression needs numeric targets"),
    (["train", "--data", "DATA", "--momentum", "0.9"],
     "--momentum: the adam optimizer (Adam) has no momentum option"),
    (["compare", "--data", "DATA", "--optimizers", "sgd,adagrad", "--momentum", "0.5"],
     "the adagrad optimizer (Adagrad) has no momentum option"),
    (["train", "--data", "DATA", "--layers", "abc"], "argument --layers: hidden layer sizes"),
    (["train", "--data", "DATA", "--layers", "8,0"], "argument --layers"),
    (["compare", "--data", "DATA", "--optimizers", ","], "no optimizer named in ','"),
    (["train", "--data", "DATA", "--save", "NOFOLDER"], "does not exist"),
    (["train", "--data", "DATA", "--plot", "FOLDER"], "is a folder, not a file"),
    (["train", "--data", "DATA", "--batch-size", "-3"], "--batch-size must be >= 0"),
    (["train", "--data", "DATA", "--lr", "-1"], "Invalid learning rate: -1.0"),
    (["train", "--data", "DATA", "--val-split", "1.5"], "val_split must be in [0, 1)"),
    (["train", "--data", "DATA", "--activation", "bogus"], "unknown activation 'bogus'"),
])
def test_errors_exit_2_with_a_message_and_no_traceback(tmp_path, capsys, argv, message):
    paths = _files(tmp_path)
    argv = [str(paths[a]) if a in paths else a for a in argv]
    before = sorted(p.name for p in tmp_path.iterdir())
    try:
        status = main(argv)
    except SystemExit as e:  # argparse's own errors
        status = e.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_string_labels_and_no_validation_split(tmp_path, capsys):
    paths = _files(tmp_path)
    assert main(["train", "--data", str(paths["YSTR"]), "--epochs", "2", "--no-progress",
                 "--val-split", "0"]) == 0
    out = capsys.readouterr().out
    assert "2 classes" in out and "0 validation samples" in out
    row = next(r for r in out.splitlines() if r.startswith("adam "))
    assert row.split()[2:4] == ["-", "-"] and "nan" not in row
    assert "1st epoch includes compiling" in out


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert fastgd.__version__ in capsys.readouterr().out
