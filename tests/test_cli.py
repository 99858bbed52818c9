"""The command line, end to end: ``python -m nnback ...`` in a subprocess for each command's
main path, its exit codes and its output streams; the table of bad inputs through ``main()``
in-process (the same code path, without an interpreter start per case)."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnback as nb
from nnback.__main__ import COMMANDS, main
from conftest import write_csv

ROOT = Path(__file__).resolve().parent.parent


def cli_environment(env=None):
    """The environment a command runs in: this checkout first on the path, the default
    backend left to "auto", and ``env`` on top."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    environment.pop("NNBACK_BACKEND", None)
    environment.update(env or {})
    return environment


def nnback_cli(*args, cwd, env=None, check=True):
    """Run ``python -m nnback *args`` in ``cwd``; the CompletedProcess (text)."""
    environment = cli_environment(env)
    result = subprocess.run([sys.executable, "-m", "nnback", *map(str, args)], cwd=cwd,
                            env=environment, capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def read_csv_rows(text):
    return list(csv.reader(text.splitlines()))


# -- help and arguments ---------------------------------------------------------------------
def test_top_level_help_lists_every_command(tmp_path):
    result = nnback_cli("--help", cwd=tmp_path)
    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: python -m nnback {command}" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    [],
    ["no-such-command"],
    ["train", "data.csv"],                                       # --target is required
    ["train", "data.csv", "--target", "y", "--layers", "64,x"],
    ["train", "data.csv", "--target", "y", "--epochs", "0"],
    ["train", "data.csv", "--target", "y", "--lr", "-1"],
    ["train", "data.csv", "--target", "y", "--validation-split", "1.5"],
    ["train", "data.csv", "--target", "y", "--task", "cluster"],
    ["train", "data.csv", "--target", "y", "--backend", "tpu"],
    ["predict", "model.nnb"],                                    # no data file
], ids=lambda argv: " ".join(argv) or "nothing")
def test_bad_arguments_exit_2_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_bad_arguments_exit_2_from_the_interpreter(tmp_path):
    result = nnback_cli("train", "data.csv", "--target", "y", "--epochs", "zero",
                        cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "argument --epochs: 'zero' is not a positive integer" in result.stderr


# -- info and demo ------------------------------------------------------------------------
def test_info_names_version_backends_device_and_blas(tmp_path):
    result = nnback_cli("info", cwd=tmp_path)
    assert result.stdout.startswith(f"nnback {nb.__version__} ")
    # what the command's own process finds (the tests' process may hold the CuPy stand-in)
    facts = json.loads(subprocess.run(
        [sys.executable, "-c", "import json, nnback as nb; print(json.dumps("
         "[nb.available_backends(), nb.get_backend('auto').name]))"],
        cwd=tmp_path, env=cli_environment(), capture_output=True, text=True,
        timeout=120).stdout)
    for name, reason in facts[0].items():
        expected = f"{name}: available on" if reason is None else f"{name}: unavailable: "
        assert expected in result.stdout
    if sys.platform.startswith("linux"):
        assert "GiB memory)" in result.stdout.split("numpy: available on", 1)[1].splitlines()[0]
    assert f"default backend (auto): {facts[1]}" in result.stdout


def test_demo_prints_the_tutorial_numbers(tmp_path):
    result = nnback_cli("demo", "--backend", "numpy", cwd=tmp_path)
    assert "w=[0, 1], b=4 on [2, 3]: 0.9990889488055994" in result.stdout
    assert "every w=[0, 1], b=0, on [2, 3]: 0.7216325609518421" in result.stdout
    assert "new: Emily" in result.stdout and "Frank" in result.stdout


# -- train and predict ----------------------------------------------------------------------
def test_train_then_predict_classifies_text_labels(pets, tmp_path):
    model = tmp_path / "pets.nnb"
    trained = nnback_cli("train", pets, "--target", "kind", "--layers", "8", "--epochs", "30",
                         "--lr", "0.05", "--save", model, "--quiet", cwd=tmp_path)
    assert "task: classify 'kind' (2 classes: cat, dog)" in trained.stdout
    assert "training accuracy 1.000" in trained.stdout
    predicted = nnback_cli("predict", model, pets, cwd=tmp_path)
    rows = read_csv_rows(predicted.stdout)
    truth = [row[-1] for row in read_csv_rows(pets.read_text())]
    assert rows[0] == ["kind"] and rows == [[label] for label in truth]
    assert predicted.stderr == ""


def test_predict_proba_and_output_file(pets, tmp_path):
    model = tmp_path / "pets.nnb"
    nnback_cli("train", pets, "--target", "kind", "--layers", "8", "--epochs", "5",
               "--save", model, "--quiet", cwd=tmp_path)
    output = tmp_path / "predictions.csv"
    result = nnback_cli("predict", model, pets, "--proba", "--output", output, cwd=tmp_path)
    assert result.stdout == f"wrote 60 predictions to {output}\n"
    rows = read_csv_rows(output.read_text())
    assert rows[0] == ["kind", "proba_cat", "proba_dog"] and len(rows) == 61
    probabilities = np.array([[float(cell) for cell in row[1:]] for row in rows[1:]])
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    labels = np.array(["cat", "dog"])[probabilities.argmax(axis=1)]
    assert [row[0] for row in rows[1:]] == list(labels)


def test_train_then_predict_regresses_numbers_in_their_units(prices, tmp_path):
    model = tmp_path / "prices.nnb"
    trained = nnback_cli("train", prices, "--target", "price", "--layers", "16",
                         "--activation", "tanh", "--epochs", "200", "--lr", "0.01",
                         "--validation-split", "0.25", "--save", model, "--quiet",
                         cwd=tmp_path)
    assert "task: regress 'price' (numbers)" in trained.stdout
    assert "60 rows for training, 20 for validation" in trained.stdout
    assert "validation RMSE" in trained.stdout
    # the features only: a CSV without the target column predicts as well
    features = write_csv(tmp_path / "new.csv", ["a", "b"], [[0, 0], [0.5, -0.5]])
    rows = read_csv_rows(nnback_cli("predict", model, features, cwd=tmp_path).stdout)
    assert rows[0] == ["price"]
    predicted = np.array([float(row[0]) for row in rows[1:]])
    assert np.allclose(predicted, [100, 125], atol=5)     # 30·a − 20·b + 100


def test_model_file_keeps_what_predict_needs(pets, tmp_path):
    model_path = tmp_path / "pets.nnb"
    nnback_cli("train", pets, "--target", "kind", "--layers", "4", "--epochs", "1",
               "--save", model_path, "--quiet", cwd=tmp_path)
    model, extra = nb.load(model_path, backend="numpy", return_extra=True)
    metadata = extra["csv"]
    assert metadata["task"] == "classify" and metadata["classes"] == ["cat", "dog"]
    assert metadata["features"] == ["weight", "height", "age"]
    assert model.layer_sizes == [3, 4, 2]
    assert nb.load(model_path, backend="numpy").layer_sizes == [3, 4, 2]  # extra is optional


def test_save_and_load_round_trip_extra_and_reject_non_dict(tmp_path):
    model = nb.MLP([2, 1], seed=0)
    model_path = tmp_path / "model.nnb"
    nb.io.save(model, model_path, extra={"note": [1, "two"]})
    assert nb.load(model_path, return_extra=True)[1] == {"note": [1, "two"]}
    nb.io.save(model, model_path)
    assert nb.load(model_path, return_extra=True)[1] == {}
    with pytest.raises(TypeError, match="extra must be a dict"):
        nb.io.save(model, model_path, extra=["not", "a", "dict"])


def test_predict_with_a_model_saved_from_python_uses_every_column(tmp_path):
    model = nb.MLP([2, 1], output="identity", dtype="float64")
    model.set_weights([np.array([[1.0], [10.0]]), np.array([0.5])])
    model.save(tmp_path / "plain.nnb")
    data = write_csv(tmp_path / "x.csv", ["first", "second"], [[1, 2], [3, 4]])
    rows = read_csv_rows(nnback_cli("predict", "plain.nnb", data, cwd=tmp_path).stdout)
    assert rows == [["output"], ["21.5"], ["43.5"]]
    named = write_csv(tmp_path / "named.csv", ["first", "name", "second"],
                      [[1, "a", 2], ["NA", "b", 0], [3, "c", 4]])
    done = nnback_cli("predict", "plain.nnb", named, "--id-column", "name", "--drop-missing",
                      cwd=tmp_path)
    assert read_csv_rows(done.stdout) == [["name", "output"], ["a", "21.5"], ["c", "43.5"]]
    assert done.stderr == "missing values: skipped 1 row (line 3)\n"


def test_progress_bar_with_tqdm_and_epoch_lines_without(pets, tmp_path):
    pytest.importorskip("tqdm")
    with_bar = nnback_cli("train", pets, "--target", "kind", "--epochs", "3", cwd=tmp_path)
    assert "3/3" in with_bar.stderr and "epoch 1/3" not in with_bar.stdout
    hidden = tmp_path / "hide_tqdm" / "tqdm"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text('raise ImportError("tqdm hidden for this test")\n')
    environment = {"PYTHONPATH": os.pathsep.join([str(hidden.parent), str(ROOT)])}
    without = nnback_cli("train", pets, "--target", "kind", "--epochs", "3", cwd=tmp_path,
                         env=environment)
    assert [line.split(" - ")[0] for line in without.stderr.splitlines()
            if line.startswith("epoch ")] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "epoch " not in without.stdout  # progress on stderr, results on stdout


# -- clear errors: exit 1, one line, no traceback -------------------------------------------
def test_data_error_exits_1_with_one_line_and_no_traceback(tmp_path):
    data = write_csv(tmp_path / "bad.csv", ["a", "b", "y"], [[1, 2, 0], [3, "seven", 1]])
    result = nnback_cli("train", data, "--target", "y", cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr == (f"python -m nnback train: error: {data}, line 3, column 'b': "
                             "'seven' is not a number; feature columns must hold numbers "
                             "(choose them with --features)\n")
    assert result.stdout == ""


def test_bad_model_file_exits_1(tmp_path):
    data = write_csv(tmp_path / "x.csv", ["a"], [[1]])
    (tmp_path / "model.nnb").write_bytes(b"PK\x03\x04 not really a zip archive")
    result = nnback_cli("predict", "model.nnb", data, cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("python -m nnback predict: error: model.nnb ")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.fixture
def saved(pets, tmp_path):
    """A small model trained on pets.csv by `train --save` (in-process, to save time)."""
    path = tmp_path / "saved.nnb"
    assert main(["train", str(pets), "--target", "kind", "--layers", "4", "--epochs", "1",
                 "--save", str(path), "--quiet"]) == 0
    return path


TRAIN_ERRORS = [
    ("missing file", None, ["--target", "y"], "no-such.csv: No such file or directory"),
    ("empty file", "", ["--target", "y"], "is empty; a header row of column names is needed"),
    ("header only", "a,y\n", ["--target", "y"], "has a header but no rows of data"),
    ("ragged row", "a,y\n1,0\n2\n", ["--target", "y"], "line 3: 1 cells, but the header has 2"),
    ("repeated name", "a,a,y\n1,2,0\n", ["--target", "y"], "repeats the column name(s) 'a'"),
    ("missing target", "a,b\n1,2\n", ["--target", "y"],
     "has no column 'y' (--target). It has 2 columns: 'a', 'b'"),
    ("empty cell", "a,y\n1,0\n,1\n", ["--target", "y"],
     "data.csv has missing values in 1 row: line 3, column 'a' (empty). nnback does not "
     "fill in missing values: drop those rows (--drop-missing) or fill them in first (e.g. "
     "with scikit-learn's SimpleImputer)"),
    ("missing markers", "a,b,y\n1,NA,0\n?,2,1\nNaN,n/a,1\n1,2,NULL\n4,None,1\n",
     ["--target", "y"],
     "data.csv has missing values in 5 rows: line 2, column 'b' ('NA'); line 3, column 'a' "
     "('?'); line 4, column 'a' ('NaN'); line 4, column 'b' ('n/a'); ... (2 more rows). "
     "nnback does not fill in missing values"),
    ("everything missing", "a,y\n,0\nNA,1\n", ["--target", "y", "--drop-missing"],
     "data.csv: every one of its 2 rows has a missing value, so --drop-missing leaves "
     "nothing"),
    ("infinite cell", "a,y\n1,0\ninf,1\n", ["--target", "y"],
     "line 3, column 'a': 'inf' is not a finite number"),
    ("empty target", "a,y\n1,0\n2,\n", ["--target", "y"],
     "line 3, column 'y' (empty)"),
    ("NA target", "a,y\n1,cat\n2,NA\n3,dog\n", ["--target", "y"],
     "line 3, column 'y' ('NA')"),
    ("text to regress", "a,y\n1,low\n2,high\n", ["--target", "y", "--task", "regress"],
     "'low' is not a number; a regression target must hold numbers"),
    ("one class", "a,y\n1,0\n2,0\n", ["--target", "y"], "holds one class only ('0')"),
    ("target as feature", "a,y\n1,0\n2,1\n", ["--target", "y", "--features", "a,y"],
     "the target column 'y' is also listed in --features"),
    ("unknown feature", "a,y\n1,0\n2,1\n", ["--target", "y", "--features", "a,c"],
     "has no column 'c' (--features)"),
    ("unknown id column", "a,y\n1,0\n2,1\n", ["--target", "y", "--id-column", "name"],
     "has no column 'name' (--id-column)"),
    ("id column as target", "i,a,y\n1,1,0\n2,2,1\n", ["--target", "y", "--id-column", "y"],
     "--id-column 'y' is the --target column"),
    ("id column as feature", "i,a,y\n1,1,0\n2,2,1\n",
     ["--target", "y", "--id-column", "i", "--features", "i,a"],
     "--id-column 'i' is also listed in --features"),
    ("patience without early stopping", "a,y\n1,0\n2,1\n",
     ["--target", "y", "--n-iter-no-change", "5"],
     "--n-iter-no-change is a setting of --early-stopping; add --early-stopping, or leave it "
     "out"),
    ("tol without early stopping", "a,y\n1,0\n2,1\n", ["--target", "y", "--tol", "0"],
     "--tol is a setting of --early-stopping"),
    ("early stopping without a split", "a,y\n1,0\n2,1\n",
     ["--target", "y", "--early-stopping", "--validation-split", "0"],
     "--early-stopping needs a validation split"),
    ("no rows to validate", "a,y\n1,0\n2,1\n", ["--target", "y", "--validation-split", "0.1"],
     "leaves 2 of 2 rows for training and 0 for validation"),
    ("not UTF-8", b"a,y\n\xff,1\n", ["--target", "y"], "is not a UTF-8 text file"),
]


@pytest.mark.parametrize("content, options, message",
                         [case[1:] for case in TRAIN_ERRORS],
                         ids=[case[0] for case in TRAIN_ERRORS])
def test_train_reports_bad_data_on_one_line(content, options, message, tmp_path, capsys,
                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = "no-such.csv"
    if content is not None:
        path = "data.csv"
        mode = "wb" if isinstance(content, bytes) else "w"
        with open(path, mode) as stream:
            stream.write(content)
    assert main(["train", path, "--epochs", "1", "--quiet", *options]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("python -m nnback train: error: ")
    assert message in captured.err and len(captured.err.splitlines()) == 1


PREDICT_ERRORS = [
    ("missing feature column", "weight,height\n1,2\n",
     "has 2 feature columns but saved.nnb was trained on 3 (weight, height, age): "
     "missing 'age'"),
    ("unknown column", "weight,height,age,colour\n1,2,3,4\n",
     "has 4 feature columns but saved.nnb was trained on 3 (weight, height, age): "
     "unknown 'colour'"),
    ("non-numeric cell", "weight,height,age\n1,2,old\n",
     "line 2, column 'age': 'old' is not a number"),
    ("missing cell", "weight,height,age\n1,2,3\n1,NA,3\n",
     "has missing values in 1 row: line 3, column 'height' ('NA'). nnback does not fill in"),
    ("unknown column, id column not named", "name,weight,height,age\nrex,1,2,3\n",
     "unknown 'name'; name an id column with --id-column"),
]


@pytest.mark.parametrize("content, message", [case[1:] for case in PREDICT_ERRORS],
                         ids=[case[0] for case in PREDICT_ERRORS])
def test_predict_reports_bad_columns_on_one_line(content, message, saved, tmp_path, capsys,
                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("new.csv").write_text(content)
    capsys.readouterr()
    assert main(["predict", saved.name, "new.csv"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("python -m nnback predict: error: new.csv")
    assert message in captured.err and len(captured.err.splitlines()) == 1
    assert captured.out == ""


def test_predict_ignores_the_target_column_it_was_trained_with(saved, pets, capsys):
    capsys.readouterr()
    assert main(["predict", str(saved), str(pets)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 61


def test_predict_proba_refused_for_regression(prices, tmp_path, capsys):
    path = tmp_path / "prices.nnb"
    assert main(["train", str(prices), "--target", "price", "--epochs", "1", "--quiet",
                 "--save", str(path)]) == 0
    assert main(["predict", str(path), str(prices), "--proba"]) == 1
    assert "--proba is for classification" in capsys.readouterr().err


def test_unwritable_output_is_one_line(saved, pets, tmp_path, capsys):
    capsys.readouterr()
    target = tmp_path / "missing-folder" / "out.csv"
    assert main(["predict", str(saved), str(pets), "--output", str(target)]) == 1
    assert capsys.readouterr().err == (
        f"python -m nnback predict: error: --output {target}: the folder {target.parent} "
        "does not exist; create it first or choose another path\n")


def test_cupy_backend_without_cupy_is_one_line(pets, capsys, no_cupy):
    assert main(["train", str(pets), "--target", "kind", "--backend", "cupy"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("python -m nnback train: error: ") and "cupy" in err
    assert len(err.splitlines()) == 1
    # issue 16, item 11: the command line's words, and both install commands
    assert "pip install 'nnback[cuda12]' (from a checkout: '.[cuda12]')" in err
    assert "backend='" not in err
    # said before the data is read: not after reading (or failing on) the file
    assert main(["train", "no-such.csv", "--target", "kind", "--backend", "cupy"]) == 1
    assert "the cupy backend needs CuPy" in capsys.readouterr().err


def test_python_advice_is_reworded_for_the_command_line():
    from nnback.__main__ import _for_the_command_line

    assert _for_the_command_line("or use backend='numpy' / backend='auto' to run on the "
                                 "CPU") == "or use --backend numpy / --backend auto to run " \
                                           "on the CPU"
    assert _for_the_command_line("install it: pip install 'nnback[sklearn,mpi]'") == \
        "install it: pip install 'nnback[sklearn,mpi]' (from a checkout: '.[sklearn,mpi]')"


def test_a_bad_save_or_output_path_fails_before_any_work(pets, tmp_path):
    """Issue 16, item 2: the destination is checked before the first epoch (and before
    predict reads anything), exit status 1, one line naming the path and what is wrong."""
    missing = tmp_path / "no" / "such" / "m.nnb"
    done = nnback_cli("train", pets, "--target", "kind", "--epochs", "100000", "--save",
                      missing, cwd=tmp_path, check=False)
    assert done.returncode == 1
    assert f"--save {missing}: the folder {missing.parent} does not exist" in done.stderr
    assert "epoch" not in done.stdout + done.stderr and "task:" not in done.stdout
    folder = nnback_cli("train", pets, "--target", "kind", "--save", tmp_path, cwd=tmp_path,
                        check=False)
    assert folder.returncode == 1 and "is a folder; give a file name such as" in folder.stderr
    saved = tmp_path / "m.nnb"
    nnback_cli("train", pets, "--target", "kind", "--epochs", "2", "--save", saved,
               cwd=tmp_path)
    out = tmp_path / "gone" / "pred.csv"
    predicted = nnback_cli("predict", saved, pets, "--output", out, cwd=tmp_path, check=False)
    assert predicted.returncode == 1
    assert f"--output {out}: the folder {out.parent} does not exist" in predicted.stderr


def test_an_unknown_column_names_the_closest_ones_not_all(tmp_path):
    """Issue 16, item 7: difflib's closest names and the count, not 65 names."""
    header = [f"pixel_{index}" for index in range(64)] + ["target"]
    data = write_csv(tmp_path / "wide.csv", header, [[0] * 64 + [index % 2]
                                                     for index in range(6)])
    done = nnback_cli("train", data, "--target", "tagret", cwd=tmp_path, check=False)
    assert done.returncode == 1
    assert "has no column 'tagret' (--target); did you mean 'target'? It has 65 columns: 'pixel_0'" \
        in done.stderr
    assert "(57 more)" in done.stderr and "pixel_40" not in done.stderr
    upper = nnback_cli("train", data, "--target", "TARGET", cwd=tmp_path, check=False)
    assert "did you mean 'target'?" in upper.stderr


def test_dash_reads_standard_input_and_writes_standard_output(pets, tmp_path):
    """Issue 16, item 6: `head -3 new.csv | python -m nnback predict m.nnb -`, and
    `-o -`; the short options -t, -q, -o."""
    saved = tmp_path / "m.nnb"
    nnback_cli("train", pets, "-t", "kind", "--epochs", "2", "-q", "--save", saved,
               cwd=tmp_path)
    head = "\n".join(pets.read_text().splitlines()[:3]) + "\n"
    piped = subprocess.run([sys.executable, "-m", "nnback", "predict", str(saved), "-",
                            "-o", "-"], input=head, cwd=tmp_path, capture_output=True,
                           text=True, timeout=120, env=cli_environment(None))
    assert piped.returncode == 0, piped.stderr
    rows = read_csv_rows(piped.stdout)
    assert len(rows) == 3 and rows[0][0] == "kind"  # the header and two predictions
    from_file = nnback_cli("predict", saved, pets, cwd=tmp_path)
    assert read_csv_rows(from_file.stdout)[1:3] == rows[1:]
    trained = subprocess.run([sys.executable, "-m", "nnback", "train", "-", "-t", "kind",
                              "--epochs", "1", "-q"], input=pets.read_text(), cwd=tmp_path,
                             capture_output=True, text=True, timeout=120,
                             env=cli_environment(None))
    assert trained.returncode == 0 and "after 1 epoch" in trained.stdout
