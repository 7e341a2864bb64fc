"""`si-hf-launch`: `accelerate launch` that exits with its script's exit code.

accelerate's launcher turns any failure of the script it runs into exit code 1 and raises a traceback
of its own (a `CalledProcessError` for one process, a `ChildFailedError` from torchrun for several), so
the codes scripts/run_rounds.py documents (2 recipe, 3 Hub, 4 rounds on disk) never reach the shell.
This runs accelerate's own parser and launcher, unchanged, and turns those two exceptions back into the
script's code; the script has already printed its one `error:` line.

    si-hf-launch --config_file accelerate_config.yaml scripts/run_rounds.py --config recipes/copy/tiny.yaml
"""

import subprocess

from accelerate.commands.launch import launch_command, launch_command_parser
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError


def shell_code(returncode: int) -> int:
    """A child killed by signal N reports -N; a shell reports 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def main(argv=None) -> int:
    args = launch_command_parser().parse_args(argv)
    try:
        launch_command(args)
    except subprocess.CalledProcessError as err:  # one process
        return shell_code(err.returncode)
    except ChildFailedError as err:  # several processes (torchrun): the code of the first that failed
        _, failure = err.get_first_failure()
        return shell_code(failure.exitcode)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
