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


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--data", "nowhere.txt"], "unknown data"),
    (["train", "--data", "missing.npz"], "No such file"),
    (["compare", "--optimizers", "gd,bogus", "--data", "DATA"], "unknown optimizer"),
    (["train", "--model", "linear", "--data", "DATA"], "linear regression needs"),
    (["train", "--epochs", "0", "--data", "DATA"], "--epochs must be >= 1"),
])
def test_errors_exit_2_with_a_message(tmp_path, capsys, argv, message):
    npz = tmp_path / "d.npz"
    np.savez(npz, X=np.ones((10, 2)), y=np.arange(10) % 2)
    argv = [str(npz) if a == "DATA" else a for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert fastgd.__version__ in capsys.readouterr().out
