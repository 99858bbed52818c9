"""The README's first two commands and CI stay in step (DEVELOPERS: .ci/run runs exactly the
README's test command)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    lines = ROOT.joinpath("README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("```bash") + 1
    return [line.split("#")[0].strip() for line in lines[start:start + 2]]


def test_readme_starts_with_the_main_job_and_the_test_command():
    run, test = readme_commands()
    assert run.startswith("python -m pip install . && python -m nnback ")
    assert test.endswith("python -m pytest") and "pip install '.[test]'" in test


def test_ci_runs_exactly_the_readme_test_command():
    _, test = readme_commands()
    ci_lines = [line.strip() for line in ROOT.joinpath(".ci", "run").read_text().splitlines()]
    assert test in ci_lines


def test_ci_treats_no_tests_collected_as_failure():
    script = ROOT.joinpath(".ci", "run").read_text()
    assert '"$status" -eq 5' in script and "exit 1" in script
