"""How a maze model goes wrong: for each level, its held-out answers sorted by the first node where
each wrong path leaves the true one. Does the model read the tree and take a wrong turn (a real edge),
jump to a node it has no edge to (E itself, skipping the middle, a neighbor of E, or another), stop short
of E, or run on past it? The last column counts the problems where E's best-connected neighbor is the
true path's node before E: a guess that counts neighbors and never follows a path gets that far on its
last step. With --by_degree it counts right answers by the degree of that node instead: a model that
finds the node the entries of its two path neighbors share does not care how many neighbors it has;
one that guesses by how often a label occurs in the prompt (a node of degree d occurs d + 1 times)
gets the low-degree nodes wrong. With --by_branch_depth it counts right answers by the depth of the
deepest side branch off the path (nodes from the path to the branch's farthest leaf; 0 for a bare
path): a model that rules out a wrong turn by seeing it end within a few lookups gets the deep
branches wrong, one that finds the way back from E does not care how deep they are.

    python scripts/maze_errors.py --model runs/maze15-base2only/seed-0/round-0/model --levels 2,3
    python scripts/maze_errors.py --model runs/maze15-base2only/seed-0/round-0/model --levels 2 --by_degree
    python scripts/maze_errors.py --model runs/maze15-6layers/seed-0/round-0/model --levels 3,4 --by_branch_depth

Analysis only: it compares the model's answers with the true paths on the checkpoint's held-out sets.
"""

import si_hf  # noqa: F401  (registers the Auto classes)
from si_hf.evaluation import analysis_arguments, held_out_answers, int_list, load_for_analysis
from si_hf.tasks.maze import parse_path, parse_prompt

KINDS = ("right", "wrong start", "turns along an edge", "jumps to E", "jumps to a neighbor of E",
         "jumps elsewhere", "stops short of E", "runs past E", "malformed")
HUB = "E's best-connected neighbor is next to E on the path"


def error_kind(prompt: str, completion: str, truth: str) -> str:
    """Which of KINDS a completion is, judged at the first node where it leaves the true path."""
    if completion == truth:
        return "right"
    nodes = parse_path(completion)
    if nodes is None:
        return "malformed"
    path = parse_path(truth)
    _, end, entries = parse_prompt(prompt)
    i = next((j for j, (a, b) in enumerate(zip(nodes, path)) if a != b), min(len(nodes), len(path)))
    if i == 0:
        return "wrong start"
    if i == len(nodes):
        return "stops short of E"
    if i == len(path):
        return "runs past E"
    adjacency = dict(entries)
    if nodes[i] in adjacency.get(nodes[i - 1], ()):
        return "turns along an edge"
    if nodes[i] == end:
        return "jumps to E"
    return "jumps to a neighbor of E" if nodes[i] in adjacency.get(end, ()) else "jumps elsewhere"


def hub_is_next_to_end(prompt: str, truth: str) -> bool:
    """Whether E's best-connected neighbor (strictly the most neighbors) is the true path's node before E."""
    _, end, entries = parse_prompt(prompt)
    adjacency = dict(entries)
    degrees = sorted(((len(adjacency[v]), v) for v in adjacency[end]), reverse=True)
    unique = len(degrees) == 1 or degrees[0][0] > degrees[1][0]
    return unique and degrees[0][1] == parse_path(truth)[-2]


def error_row(prompts, completions, truths) -> dict:
    row = {"problems": len(prompts), **dict.fromkeys(KINDS, 0), HUB: 0}
    for prompt, completion, truth in zip(prompts, completions, truths):
        row[error_kind(prompt, completion, truth)] += 1
        row[HUB] += hub_is_next_to_end(prompt, truth)
    return row


def degree_before_end(prompt: str, truth: str) -> int:
    """How many neighbors the true path's node before E has."""
    return len(dict(parse_prompt(prompt)[2])[parse_path(truth)[-2]])


def branch_depth(prompt: str, truth: str) -> int:
    """How many nodes deep the deepest side branch off the true path's nodes before E goes."""
    adjacency = dict(parse_prompt(prompt)[2])
    path = parse_path(truth)
    on_path = set(path)

    def depth(node, parent):  # nodes from `node` down to its farthest leaf, away from `parent`
        return 1 + max((depth(v, node) for v in adjacency[node] if v != parent), default=0)

    return max((depth(v, u) for u in path[:-1] for v in adjacency[u] if v not in on_path), default=0)


def right_by(key, prompts, completions, truths) -> dict[int, list[int]]:
    """{key(prompt, truth): [right, problems]}, keys in increasing order."""
    rows: dict[int, list[int]] = {}
    for prompt, completion, truth in zip(prompts, completions, truths):
        row = rows.setdefault(key(prompt, truth), [0, 0])
        row[0] += completion == truth
        row[1] += 1
    return dict(sorted(rows.items()))


def print_kinds(level, prompts, answers, truths):
    row = error_row(prompts, answers, truths)
    print(f"| {level} | " + " | ".join(str(v) for v in row.values()) + " |")


def right_by_printer(key):
    def print_rows(level, prompts, answers, truths):
        for value, (right, total) in right_by(key, prompts, answers, truths).items():
            print(f"| {level} | {value} | {total} | {right} | {right / total:.3f} |")
    return print_rows


def main(argv=None):
    parser = analysis_arguments(__doc__, eval_size=500)
    parser.add_argument("--levels", required=True, type=int_list, help="comma-separated levels, e.g. 2,3")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--by_degree", action="store_true",
                     help="right answers by the degree of the true path's node before E")
    how.add_argument("--by_branch_depth", action="store_true",
                     help="right answers by the depth of the deepest side branch off the true path")
    args = parser.parse_args(argv)
    model, tokenizer, task = load_for_analysis(args.model, args.num_threads)
    if not task.name.startswith("maze"):
        raise SystemExit(f"{task.name} is not a maze task")
    if args.by_degree or args.by_branch_depth:
        column, key = (("degree of the node before E", degree_before_end) if args.by_degree
                       else ("deepest side branch", branch_depth))
        print(f"| level | {column} | problems | right | accuracy |\n|---|---|---|---|---|")
        print_row = right_by_printer(key)
    else:
        print("| level | problems | " + " | ".join(KINDS) + f" | {HUB} |\n|---|---|" + "---|" * (len(KINDS) + 1))
        print_row = print_kinds
    for level in args.levels:
        problems, answers = held_out_answers(model, tokenizer, task, level, args.eval_size)
        print_row(level, [task.prompt(p) for p in problems], answers, [task.answer(p) for p in problems])


if __name__ == "__main__":
    main()
