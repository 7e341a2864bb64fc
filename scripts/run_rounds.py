"""Run a self-improvement loop from a recipe.

    accelerate launch scripts/run_rounds.py --config recipes/copy/tiny.yaml [--field value ...]

Exits 0, or 2 (the recipe), 3 (the Hub), 4 (the rounds on disk), each with one `error:` line; under
`accelerate launch` the shell sees 1 whatever the code, under `si-hf-launch` (si_hf/launch.py) the code.
"""

import os
import sys

from si_hf.config import parse_recipe
from si_hf.errors import HubError, RecipeError, RoundError
from si_hf.manifest import is_disk_full
from si_hf.rounds import SelfImprovement


def main(argv=None):
    try:
        recipe = parse_recipe(argv)
        SelfImprovement(recipe).run()
    except RecipeError as err:
        if os.environ.get("RANK", "0") == "0":  # every process reads the same recipe: one line is enough
            print(f"error: {err}", file=sys.stderr)
        return 2
    except HubError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except RoundError as err:  # a finished round that is missing or corrupted, or a full disk while saving
        print(f"error: {err}", file=sys.stderr)
        return 4
    except OSError as err:
        if not is_disk_full(err):
            raise
        print(f"error: the disk is full: {err}", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
