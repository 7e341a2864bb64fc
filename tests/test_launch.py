"""si-hf-launch: accelerate's launcher with the exit code of scripts/run_rounds.py and its one error line, for
one process and for two (torchrun)."""

import subprocess
import sys
from pathlib import Path

import pytest

from si_hf.launch import shell_code

REPO_ROOT = Path(__file__).resolve().parents[1]
UNKNOWN_TASK = ("error: task: Unknown task 'copyy'. Did you mean 'copy'? Known tasks: copy, forward_addition, "
                "maze_chain_15, maze_hops, maze_hops_15, maze_nodes, multiplication, reverse, reverse_addition.")


def launch(accelerate_config: str, *script_args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "si_hf.launch", "--config_file", str(REPO_ROOT / accelerate_config),
                           str(REPO_ROOT / "scripts" / "run_rounds.py"), *script_args],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture
def bad_recipe(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("task: copyy\n")
    return path


def test_a_bad_recipe_exits_2_with_one_line(tmp_path, bad_recipe):
    proc = launch("accelerate_config.yaml", "--config", str(bad_recipe), "--output_dir", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [UNKNOWN_TASK]  # no traceback from the launcher
    assert not (tmp_path / "out").exists()


def test_an_output_dir_that_is_a_file_exits_4(tmp_path):
    (tmp_path / "out").write_text("not a directory")
    proc = launch("accelerate_config.yaml", "--config", str(REPO_ROOT / "recipes" / "copy" / "tiny.yaml"),
                  "--output_dir", str(tmp_path / "out"))
    assert proc.returncode == 4
    assert error_lines(proc.stderr) == [f"error: output_dir {tmp_path / 'out'} exists and is not a directory"]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_two_processes_exit_2_with_the_error_once(tmp_path, bad_recipe):
    proc = launch("recipes/accelerate/cpu_2proc.yaml", "--config", str(bad_recipe),
                  "--output_dir", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert error_lines(proc.stderr) == [UNKNOWN_TASK]  # torchrun adds its own log line, not a traceback
    assert "Traceback" not in proc.stderr


def test_a_success_exits_0_and_a_signal_reads_as_a_shell_would():
    assert subprocess.run([sys.executable, "-m", "si_hf.launch", "--help"], capture_output=True).returncode == 0
    assert shell_code(2) == 2 and shell_code(-15) == 143 and shell_code(0) == 0
