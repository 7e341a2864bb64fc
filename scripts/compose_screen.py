"""What the compose step would label at a level: fresh problems (drawn apart from the held-out sets), the
model's own answers to them, and the answers its pieces compose, with and without the cuts whose answers
did not finish (tasks that compose around them, the mazes, skip such a cut; the others drop the prompt).

    python scripts/compose_screen.py --model runs/maze15-compose-path/seed-1/round-3/model --levels 7 --eval_size 200

Analysis only: the true answers are read for the "right" columns and nothing else.
"""

import copy

import si_hf  # noqa: F401  (registers the Auto classes)
from si_hf.consistency import compose_labels
from si_hf.data import seeded_rng
from si_hf.evaluation import analysis_arguments, int_list, load_for_analysis
from si_hf.labeling import greedy_label


def screen_row(model, tokenizer, task, level: int, size: int, seed: int, max_piece: int) -> list:
    """[problems, own answers right, then composed and right where an unfinished piece drops the prompt,
    then composed and right as the task composes]."""
    rng = seeded_rng(seed, "compose screen", task.name, level)
    problems = [task.sample(level, rng) for _ in range(size)]
    prompts, truths = [task.prompt(p) for p in problems], [task.answer(p) for p in problems]
    own = greedy_label(model, tokenizer, prompts, [task.max_answer_len(q) for q in prompts], disable_tqdm=True)
    dropping = copy.copy(task)  # the task itself is shared by the registry
    dropping.composes_around_unfinished = False
    dropped = _composed_counts(model, tokenizer, dropping, own, truths, max_piece)
    # Only a task that composes around unfinished pieces composes otherwise: label its pieces a second time
    as_task = (_composed_counts(model, tokenizer, task, own, truths, max_piece)
               if task.composes_around_unfinished else dropped)
    return [size, sum(lab.completion == t for lab, t in zip(own, truths)), *dropped, *as_task]


def _composed_counts(model, tokenizer, task, labels, truths, max_piece) -> list[int]:
    """[labels the compose step composes, those of them that are right]."""
    composed = [lab.composed for lab in compose_labels(model, tokenizer, task, labels, max_piece)]
    return [sum(map(bool, composed)), sum(c == t for c, t in zip(composed, truths))]


def main(argv=None):
    parser = analysis_arguments(__doc__, eval_size=200)
    parser.add_argument("--levels", required=True, type=int_list, help="comma-separated levels, e.g. 6,7")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fresh problems")
    parser.add_argument("--max_piece", type=int, default=None,
                        help="the largest piece's level (default: the level below; the mazes do not read it)")
    args = parser.parse_args(argv)
    model, tokenizer, task = load_for_analysis(args.model, args.num_threads)
    if not task.has_pieces or task.pair_levels:
        raise SystemExit(f"{task.name}: the screen needs a task with pieces and whole-number levels")
    print("| level | problems | own answer right | composed, an unfinished piece drops the prompt | right | "
          "composed as the task does | right |\n|---|---|---|---|---|---|---|")
    for level in args.levels:
        row = screen_row(model, tokenizer, task, level, args.eval_size, args.seed, args.max_piece or level - 1)
        print("| " + " | ".join(map(str, [level, *row])) + " |")


if __name__ == "__main__":
    main()
