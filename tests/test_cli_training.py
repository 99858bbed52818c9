"""The command line's training run as a long job (issue 16, items 3, 4, 8, 9, 10): Ctrl-C
keeps the last complete epoch, early stopping and checkpoints, missing values, row ids in
the predictions, and a validation split that does not lose a class of a sorted file.

Most cases run ``main()`` in-process (a Ctrl-C is sent by the optimizer at a chosen step,
so the epoch it lands in is known); one sends a real SIGINT to a child process."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nnback as nb
from nnback.__main__ import main
from conftest import write_csv
from test_cli import cli_environment, read_csv_rows


def interrupt_at(monkeypatch, step, signals=1):
    """Ctrl-C ``signals`` times inside Adam's ``step``-th update (as a user would press it
    while that step runs)."""
    original = nb.Adam.step

    def step_then_interrupt(self, params, grads):
        original(self, params, grads)
        if self.iterations == step:
            for _ in range(signals):
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(nb.Adam, "step", step_then_interrupt)


def weights_of(path):
    return nb.load(path, backend="numpy").get_weights()


def assert_same_weights(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


# -- item 3: Ctrl-C ------------------------------------------------------------------------
def test_ctrl_c_saves_the_model_of_the_last_complete_epoch(pets, tmp_path, monkeypatch,
                                                            capsys):
    # 60 rows in batches of 32: two steps an epoch; Ctrl-C in step 5 is in epoch 3
    reference, interrupted = tmp_path / "two-epochs.nnb", tmp_path / "interrupted.nnb"
    assert main(["train", str(pets), "-t", "kind", "--epochs", "2", "-q",
                 "--save", str(reference)]) == 0
    capsys.readouterr()
    interrupt_at(monkeypatch, step=5)
    assert main(["train", str(pets), "-t", "kind", "--epochs", "1000", "-q",
                 "--save", str(interrupted)]) == 130
    captured = capsys.readouterr()
    assert captured.err == ("interrupted in epoch 3 of 1000: saving the model as it was "
                            "after epoch 2 (Ctrl-C again quits without saving)\n")
    assert "after 2 epochs: loss " in captured.out
    assert f"saved {interrupted} (python -m nnback predict" in captured.out
    assert_same_weights(weights_of(interrupted), weights_of(reference))
    assert nb.load(interrupted, return_extra=True)[1]["csv"]["classes"] == ["cat", "dog"]


def test_ctrl_c_twice_quits_at_once_without_a_file(pets, tmp_path, monkeypatch, capsys):
    path = tmp_path / "never.nnb"
    interrupt_at(monkeypatch, step=5, signals=2)
    assert main(["train", str(pets), "-t", "kind", "--epochs", "1000", "-q",
                 "--save", str(path)]) == 130
    captured = capsys.readouterr()
    assert captured.err == "python -m nnback train: interrupted\n"
    assert not path.exists() and os.listdir(tmp_path) == ["pets.csv"]


def test_ctrl_c_in_the_first_epoch_saves_nothing(pets, tmp_path, monkeypatch, capsys):
    path = tmp_path / "never.nnb"
    interrupt_at(monkeypatch, step=1)
    assert main(["train", str(pets), "-t", "kind", "-q", "--save", str(path)]) == 130
    assert capsys.readouterr().err == "python -m nnback train: interrupted\n"
    assert not path.exists()


def test_ctrl_c_without_save_says_nothing_was_saved(pets, monkeypatch, capsys):
    interrupt_at(monkeypatch, step=7)
    assert main(["train", str(pets), "-t", "kind", "--epochs", "1000", "-q"]) == 130
    assert capsys.readouterr().err == ("interrupted in epoch 4 of 1000: the model as it was "
                                       "after epoch 3 is not saved (no --save)\n")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
def test_ctrl_c_from_the_terminal_saves_the_model(pets, tmp_path):
    path = tmp_path / "big.nnb"
    child = subprocess.Popen(
        [sys.executable, "-m", "nnback", "train", str(pets), "-t", "kind", "--epochs",
         "10000000", "--save", str(path), "-q"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=cli_environment({"PYTHONUNBUFFERED": "1"}))
    try:
        assert child.stdout.readline().startswith("task: ")  # it has started
        child.stdout.readline(), child.stdout.readline()
        time.sleep(0.5)  # some epochs (a few ms each)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130, err
    assert err.startswith("interrupted in epoch ") and "saving the model as it was" in err
    assert f"saved {path}" in out
    model, extra = nb.load(path, return_extra=True)
    assert extra["csv"]["target"] == "kind" and model.layer_sizes == [3, 64, 32, 2]


# -- item 4: early stopping and checkpoints -----------------------------------------------
@pytest.fixture
def noisy(tmp_path):
    """A regression a large network overfits: 60 rows, one informative feature of five."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 5))
    y = X[:, 0] + rng.normal(0, 1.0, size=60)
    return write_csv(tmp_path / "noisy.csv", ["a", "b", "c", "d", "e", "y"],
                     [[*x.round(4), round(v, 4)] for x, v in zip(X, y)])


def test_early_stopping_keeps_the_best_epoch_and_the_checkpoint_holds_it(noisy, tmp_path,
                                                                          capsys):
    saved, best = tmp_path / "m.nnb", tmp_path / "best.nnb"
    common = [str(noisy), "-t", "y", "--layers", "64,64", "--lr", "0.01", "-q"]
    assert main(["train", *common, "--epochs", "500", "--early-stopping",
                 "--n-iter-no-change", "5", "--save", str(saved),
                 "--checkpoint", str(best)]) == 0
    out = capsys.readouterr().out
    assert "for validation (drawn at random, --seed 0)" in out  # 10 % by default
    assert "6 for validation" in out
    stopped = int(out.split("stopped early after epoch ")[1].split(":")[0])
    kept = int(out.split("(the weights of epoch ")[1].split(")")[0])
    assert stopped == kept + 6 and stopped < 500  # 6 epochs without improvement: > 5
    assert "did not improve by more than 0.0001 for more than 5 epochs" in out
    assert f"saved {saved}, the weights of epoch {kept}" in out
    assert_same_weights(weights_of(saved), weights_of(best))
    # the best epoch's weights are those a run of exactly that many epochs ends with
    exact = tmp_path / "exact.nnb"
    assert main(["train", *common, "--epochs", str(kept), "--validation-split", "0.1",
                 "--save", str(exact)]) == 0
    assert_same_weights(weights_of(saved), weights_of(exact))


def test_checkpoint_without_validation_follows_the_training_loss(pets, tmp_path, capsys):
    best = tmp_path / "best.nnb"
    assert main(["train", str(pets), "-t", "kind", "--epochs", "3", "-q",
                 "--checkpoint", str(best)]) == 0
    model, extra = nb.load(best, return_extra=True)
    assert extra["csv"]["classes"] == ["cat", "dog"]
    bad = main(["train", str(pets), "-t", "kind", "-q", "--checkpoint",
                str(tmp_path / "no" / "best.nnb")])
    assert bad == 1
    assert "--checkpoint" in capsys.readouterr().err


# -- item 8: missing values ---------------------------------------------------------------
def test_drop_missing_skips_those_rows_and_names_their_lines(tmp_path, capsys):
    rows = [[index % 7, (index * 3) % 5, "cat" if index % 2 else "dog"] for index in range(20)]
    rows[2][0], rows[5][1], rows[9][2] = "NA", "?", ""
    data = write_csv(tmp_path / "gaps.csv", ["a", "b", "kind"], rows)
    assert main(["train", str(data), "-t", "kind", "--epochs", "1", "-q"]) == 1
    err = capsys.readouterr().err
    assert "has missing values in 3 rows: line 4, column 'a' ('NA'); line 7, column 'b' " \
           "('?'); line 11, column 'kind' (empty)" in err
    assert "SimpleImputer" in err and "--drop-missing" in err
    assert main(["train", str(data), "-t", "kind", "--epochs", "1", "-q",
                 "--drop-missing"]) == 0
    out = capsys.readouterr().out
    assert "missing values: skipped 3 rows (lines 4, 7, 11)" in out
    assert "data: 17 rows for training" in out


# -- item 9: row ids and class names in the predictions -----------------------------------
def test_predict_copies_the_id_column_and_names_the_classes(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = [[f"pet-{index}", *(rng.normal(size=2) + (2 if index % 2 else -2)).round(3),
             "cat" if index % 2 else "dog"] for index in range(40)]
    data = write_csv(tmp_path / "pets.csv", ["name", "weight", "height", "kind"], rows)
    model = tmp_path / "m.nnb"
    assert main(["train", str(data), "-t", "kind", "--id-column", "name", "--epochs", "20",
                 "--lr", "0.01", "-q", "--save", str(model)]) == 0
    assert "2 feature columns (weight, height)" in capsys.readouterr().out
    new = write_csv(tmp_path / "new.csv", ["weight", "name", "height"],
                    [[2.1, "tom", 1.9], ["NA", "ghost", 2], [-2.2, "rex", -1.8]])
    assert main(["predict", str(model), str(new), "--id-column", "name", "--proba",
                 "--drop-missing"]) == 0
    captured = capsys.readouterr()
    rows = read_csv_rows(captured.out)
    assert rows[0] == ["name", "kind", "proba_cat", "proba_dog"]
    assert [row[:2] for row in rows[1:]] == [["tom", "cat"], ["rex", "dog"]]
    assert captured.err == "missing values: skipped 1 row (line 3)\n"


# -- item 10: the validation split of a file sorted by class -----------------------------
def test_the_validation_split_is_drawn_at_random_unless_no_shuffle(tmp_path, capsys):
    rng = np.random.default_rng(1)
    rows = [[*(rng.normal(size=2) + 3 * np.array([k, -k])).round(3), kind]
            for k, kind in enumerate(["cat", "dog", "eel"]) for _ in range(30)]
    data = write_csv(tmp_path / "sorted.csv", ["a", "b", "kind"], rows)
    options = ["train", str(data), "-t", "kind", "--epochs", "40", "--lr", "0.01", "-q",
               "--validation-split", "0.4"]
    assert main(options) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    accuracy = float(captured.out.split("validation accuracy ")[1].split()[0])
    assert accuracy > 0.8
    assert main(options + ["--no-shuffle"]) == 0
    captured = capsys.readouterr()
    # the held-out rows are mostly the class never seen in training
    assert float(captured.out.split("validation accuracy ")[1].split()[0]) < 0.5
    assert "36 for validation (the last rows of the file)" in captured.out
    assert captured.err == ("warning: 1 class (eel) has no rows in the training part, so "
                            "the model cannot learn it; the file may be sorted by class: "
                            "leave out --no-shuffle\n")


# -- docs/cli.md: the worked example runs -------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
RUNS = re.compile(r"^<!-- runs(?:: exits (?P<status>\d+))? -->$")
# output lines that depend on the machine or on the last bits of the arithmetic
MACHINE_DEPENDENT = ("network:", "stopped early", "after ", "saved ")


def cli_examples(page=ROOT / "docs" / "cli.md"):
    """[(line, commands, exit status, shown output lines)] for each ```bash block after a
    ``<!-- runs -->`` marker, with the ```text block that follows it (what it prints)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    examples = []
    for index, line in enumerate(lines):
        marker = RUNS.match(line.strip())
        if not marker:
            continue
        assert lines[index + 1] == "```bash", f"cli.md:{index + 1}: a runs marker before " \
                                              "something else than a ```bash block"
        end = lines.index("```", index + 2)
        shown = []
        if lines[end + 2:end + 3] == ["```text"]:
            shown = lines[end + 3:lines.index("```", end + 3)]
        examples.append((index + 3, "\n".join(lines[index + 2:end]),
                         int(marker["status"] or 0), shown))
    return examples


def test_the_worked_example_of_the_cli_page_runs(tmp_path):
    examples = cli_examples()
    assert len(examples) >= 4
    for name in ("flowers.csv", "new-flowers.csv"):
        shutil.copy(ROOT / "docs" / "examples" / name, tmp_path / name)
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    (bin_folder / "python").symlink_to(sys.executable)  # `python` is this interpreter
    environment = cli_environment({"PATH": f"{bin_folder}{os.pathsep}{os.environ['PATH']}"})
    for line, commands, status, shown in examples:
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", commands], cwd=tmp_path,
                              env=environment, capture_output=True, text=True, timeout=300)
        printed = done.stdout + done.stderr
        assert done.returncode == status, f"docs/cli.md:{line}: exit status " \
                                          f"{done.returncode}, not {status}:\n{printed}"
        for expected in shown:
            if "..." not in expected and not expected.startswith(MACHINE_DEPENDENT):
                assert expected in printed.splitlines(), \
                    f"docs/cli.md:{line}: the page shows {expected!r}; the run printed:\n" \
                    f"{printed}"
    assert (tmp_path / "iris.nnb").is_file() and (tmp_path / "best.nnb").is_file()


# -- item 6: -v/--verbose -----------------------------------------------------------------
def test_verbose_prints_a_line_per_epoch_for_logs(pets, capsys):
    assert main(["train", str(pets), "-t", "kind", "--epochs", "3", "-v",
                 "--validation-split", "0.2"]) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert [line.split(" - ")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all(" - loss " in line and " - val_loss " in line for line in lines)
    assert "epoch 1/3" not in captured.out
    with pytest.raises(SystemExit) as exited:
        main(["train", str(pets), "-t", "kind", "-q", "-v"])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_the_scaling_comes_from_the_training_rows_only(prices, tmp_path):
    """The validation rows must not leak into the standardisation (as in scikit-learn's
    pipelines: fit the scaler on the training part)."""
    path = tmp_path / "m.nnb"
    assert main(["train", str(prices), "-t", "price", "--epochs", "1", "-q",
                 "--validation-split", "0.25", "--no-shuffle", "--save", str(path)]) == 0
    metadata = nb.load(path, return_extra=True)[1]["csv"]
    rows = np.array(read_csv_rows(prices.read_text())[1:], dtype=float)[:60]  # 80 - 20
    np.testing.assert_allclose(metadata["x_mean"], rows[:, :2].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(metadata["x_scale"], rows[:, :2].std(axis=0), rtol=1e-12)
    assert metadata["y_mean"] == pytest.approx(rows[:, 2].mean(), rel=1e-12)
