"""One run per output directory (si_hf.lock): a second run is refused at once naming the holder, a lock
left by a killed process is taken over, overwrite_output_dir cannot delete a held directory, and an
output_dir that cannot be a directory is named."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SMALL
from si_hf.errors import RoundError
from si_hf.lock import HOLDER_FILE, LOCK_FILE, RunLock
from si_hf.manifest import finished_rounds, read_manifest

REPO_ROOT = Path(__file__).resolve().parents[1]
HOLD = """import os, signal, sys, time
from si_hf.lock import RunLock
lock = RunLock(sys.argv[1]).__enter__()
print("held", flush=True)
if sys.argv[2] == "die":
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(600)
"""


def _holder_process(out: Path, how: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out), how], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_directory_is_refused_naming_the_holder(tmp_path):
    holder = _holder_process(tmp_path / "run", "sleep")
    try:
        with pytest.raises(RoundError, match=rf"in use by another run \(host .*, pid {holder.pid}, started"):
            RunLock(tmp_path / "run").__enter__()
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_message(tmp_path):
    out = tmp_path / "run"
    killed = _holder_process(out, "die")
    assert killed.wait() == -signal.SIGKILL
    stale = json.loads((out / HOLDER_FILE).read_text())
    assert stale["pid"] == killed.pid
    said = []
    with RunLock(out, log=said.append):
        assert json.loads((out / HOLDER_FILE).read_text())["pid"] == os.getpid()
    assert len(said) == 1 and "taking over" in said[0] and f"pid {killed.pid}" in said[0]
    assert not (out / HOLDER_FILE).exists()  # a clean exit leaves no holder behind
    with RunLock(out, log=pytest.fail):  # so the next run says nothing
        pass


def test_an_output_dir_that_is_a_file_is_named(tmp_path):
    (tmp_path / "run").write_text("not a directory")
    with pytest.raises(RoundError, match="exists and is not a directory"):
        RunLock(tmp_path / "run").__enter__()
    with pytest.raises(RoundError, match="cannot write there"):
        RunLock(tmp_path / "run" / "below").__enter__()


@pytest.mark.slow
def test_a_second_run_on_a_running_directory_is_refused_and_cannot_delete_it(tmp_path, write_recipe):
    """The race of two real runs: B (another seed, with overwrite_output_dir) starts while A trains."""
    # A trains long enough (tens of seconds) that B, started once A holds the lock, meets it still running
    argv = write_recipe(tmp_path, name="race", **{**SMALL, "base_steps": 4000, "num_threads": 1})
    out = tmp_path / "race"
    script = [sys.executable, str(REPO_ROOT / "scripts" / "run_rounds.py"), *argv]
    run_a = subprocess.Popen(script, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / HOLDER_FILE).exists():
        assert run_a.poll() is None and time.monotonic() < deadline, run_a.communicate()
        time.sleep(0.05)
    run_b = subprocess.run(script + ["--seed", "1", "--overwrite_output_dir", "true"], capture_output=True,
                           text=True, timeout=300)
    assert run_b.returncode == 4, run_b.stderr
    assert f"in use by another run (host {os.uname().nodename}, pid {run_a.pid}" in run_b.stderr
    assert (out / LOCK_FILE).exists() or (out / HOLDER_FILE).exists()  # A's directory is still there
    log, err = run_a.communicate(timeout=600)
    assert run_a.returncode == 0, log + err
    assert finished_rounds(out) == [0, 1, 2]
    assert len({read_manifest(out / f"round-{k}")["recipe_sha256"] for k in range(3)}) == 1  # one recipe


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_accelerate_launch_stops_the_run_and_leaves_no_process(tmp_path, write_recipe, signum):
    argv = write_recipe(tmp_path, name="stopped", **{**SMALL, "base_steps": 2000, "num_threads": 1})
    out = tmp_path / "stopped"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         str(REPO_ROOT / "accelerate_config.yaml"), str(REPO_ROOT / "scripts" / "run_rounds.py"), *argv],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        # a shell's background job (CI under nohup, say) starts with SIGINT ignored; a user's terminal does not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 180
    while not (out / HOLDER_FILE).exists():
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()
        time.sleep(0.05)
    run_pid = json.loads((out / HOLDER_FILE).read_text())["pid"]
    assert run_pid != launcher.pid  # the run is the launcher's child
    launcher.send_signal(signum)
    launcher.communicate(timeout=60)
    assert launcher.returncode != 0
    deadline = time.monotonic() + 30
    while Path(f"/proc/{run_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{run_pid}").exists(), "the run outlived its launcher"
    assert finished_rounds(out) == []
    with RunLock(out, log=lambda msg: None):  # and the directory is free again
        pass
