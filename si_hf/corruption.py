"""Error-avalanche tooling: corrupt a fraction of one round's self-generated labels on purpose.

The paper injects label noise into one round and follows how errors propagate. Three modes, on the
digits of a completion (other characters, such as the `+ ( ) =` of a multiplication chain of
thought, are left alone):

- `digits`: every digit replaced by a uniformly random digit (same length, same form);
- `drop_tail`: the last digit dropped (the label one token short);
- `perturb_tail`: the last digit moved by +1 or -1 (mod 10).
"""

import random

CORRUPT_MODES = ("digits", "drop_tail", "perturb_tail")
DIGITS = "0123456789"


def corrupt_completion(text: str, mode: str, rng: random.Random) -> str:
    """One corrupted completion (a text without digits is returned as is)."""
    if mode not in CORRUPT_MODES:
        raise ValueError(f"corrupt_mode must be one of {', '.join(CORRUPT_MODES)}, got {mode!r}")
    if mode == "digits":
        return "".join(rng.choice(DIGITS) if c in DIGITS else c for c in text)
    positions = [i for i, c in enumerate(text) if c in DIGITS]
    if not positions:
        return text
    last = positions[-1]
    if mode == "drop_tail":
        return text[:last] + text[last + 1:]
    digit = (int(text[last]) + rng.choice((-1, 1))) % 10
    return text[:last] + str(digit) + text[last + 1:]


def corrupt_completions(completions: list[str], fraction: float, mode: str, rng: random.Random
                        ) -> tuple[list[str], list[int]]:
    """Corrupts round(fraction * n) of the completions, chosen uniformly by `rng`: returns the new list
    and the (sorted) indices corrupted."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"corrupt_fraction must be in [0, 1], got {fraction!r}")
    chosen = sorted(rng.sample(range(len(completions)), round(fraction * len(completions))))
    out = list(completions)
    for i in chosen:
        out[i] = corrupt_completion(out[i], mode, rng)
    return out, chosen
