"""Maze: the shortest path between two nodes of a random tree.

Prompt: `S>E#`, then the adjacency list of the tree, nodes in shuffled order, entries `node:nb,nb`
joined by `-`, then `=`. Answer: the unique path `S>x>...>E`. Node labels are distinct integers
1-99; each label is ONE token (see `MAZE_TOKENS` and `si_hf.tokenization.task_tokenizer`):

    tree 5-12-3 plus 7 on 12, from 5 to 3: `5>3#12:5,3,7-3:12-7:12-5:12=` -> `5>12>3`

Tasks: `maze_hops` (30 nodes, difficulty = hops between S and E), `maze_hops_15` (the same on 15
nodes), `maze_chain_15` (the same on 15-node chains, a diagnostic) and `maze_nodes` (9 hops,
difficulty = number of nodes). A tree with h hops between S and E
is a path of h+1 random labels S..E, then every other node attaches to a uniformly drawn node already
placed.
`valid_path` checks an answer against the prompt's graph alone (a metric independent of the stored
answer); `plausible`, which the length filter reads, checks the form and never the edges: in a tree a
simple path from S to E that follows edges is the answer itself. The `path` filter (si_hf.filters) is
that edge check, read from the prompt alone, for runs that measure what such a check is worth.

Compositional labels (`compose`, `pieces`; si_hf.consistency): the path from S to E through a node M is
the path S..M joined to the path M..E, two easier mazes on the same tree. Which nodes lie on the path is
unknown without solving the maze, so every other node is a cut, and the joined path the model's answers
agree with most wins. A cut whose answer did not finish is left out of the vote.
"""

import itertools
import math
import re
from collections import deque

from .base import Problem, Task, register_task

MAX_LABEL = 99
MAZE_TOKENS = tuple(str(i) for i in range(1, MAX_LABEL + 1)) + tuple(">#:,-=")
_TOKEN = re.compile(r"[1-9][0-9]?|.", re.DOTALL)  # how the maze tokenizer splits a text
_LABEL = r"[1-9][0-9]?"
_PATH = re.compile(rf"{_LABEL}(?:>{_LABEL})*")
_PROMPT = re.compile(rf"({_LABEL})>({_LABEL})#({_LABEL}:{_LABEL}(?:,{_LABEL})*(?:-{_LABEL}:{_LABEL}(?:,{_LABEL})*)*)=")


def _draw_labels(num_nodes: int, hops: int, rng) -> list[int]:
    """`num_nodes` distinct random labels for a maze with S and E `hops` apart."""
    if not 1 <= hops < num_nodes <= MAX_LABEL:
        raise ValueError(f"a maze needs 1 <= hops < nodes <= {MAX_LABEL}, got hops={hops}, nodes={num_nodes}")
    return rng.sample(range(1, MAX_LABEL + 1), num_nodes)


def _adjacency(labels: list[int], edges) -> dict[int, list[int]]:
    """Each label's neighbors, in the order the (undirected) edges list them."""
    adjacency: dict[int, list[int]] = {v: [] for v in labels}
    for u, v in edges:
        adjacency[u].append(v)
        adjacency[v].append(u)
    return adjacency


def random_tree(num_nodes: int, hops: int, rng) -> tuple[int, int, dict[int, list[int]]]:
    """(S, E, adjacency): a random labeled tree on `num_nodes` nodes with S and E `hops` apart."""
    labels = _draw_labels(num_nodes, hops, rng)
    path = zip(labels[:hops], labels[1 : hops + 1])
    branches = ((labels[i], labels[rng.randrange(i)]) for i in range(hops + 1, num_nodes))
    return labels[0], labels[hops], _adjacency(labels, itertools.chain(path, branches))


def random_chain(num_nodes: int, hops: int, rng) -> tuple[int, int, dict[int, list[int]]]:
    """(S, E, adjacency): a random labeled chain of `num_nodes` nodes (every degree 1 or 2) with S and E
    `hops` apart along it, at a uniformly drawn place."""
    labels = _draw_labels(num_nodes, hops, rng)
    adjacency = _adjacency(labels, zip(labels, labels[1:]))
    first = rng.randrange(num_nodes - hops)
    return labels[first], labels[first + hops], adjacency


def format_prompt(start: int, end: int, entries) -> str:
    body = "-".join(f"{node}:{','.join(map(str, nbs))}" for node, nbs in entries)
    return f"{start}>{end}#{body}="


def parse_prompt(prompt: str) -> tuple[int, int, tuple[tuple[int, tuple[int, ...]], ...]]:
    """(S, E, entries in prompt order); ValueError for a text that is not a maze prompt."""
    m = _PROMPT.fullmatch(prompt)
    if m is None:
        raise ValueError(f"not a maze prompt: {prompt!r}")
    entries = []
    for entry in m.group(3).split("-"):
        node, nbs = entry.split(":")
        entries.append((int(node), tuple(int(x) for x in nbs.split(","))))
    return int(m.group(1)), int(m.group(2)), tuple(entries)


def shortest_path(adjacency: dict[int, list[int]] | dict[int, tuple], start: int, end: int) -> list[int] | None:
    """Breadth-first search: the nodes of a shortest path from start to end, or None."""
    parent = {start: None}
    queue = deque([start])
    while queue:
        u = queue.popleft()
        if u == end:
            path = []
            while u is not None:
                path.append(u)
                u = parent[u]
            return path[::-1]
        for v in adjacency.get(u, ()):
            if v not in parent:
                parent[v] = u
                queue.append(v)
    return None


def parse_path(completion: str) -> list[int] | None:
    """The nodes of a well-formed path `a>b>...>z`, or None."""
    if _PATH.fullmatch(completion) is None:
        return None
    return [int(x) for x in completion.split(">")]


def valid_path(prompt: str, completion: str) -> bool:
    """Whether a completion is a correct answer judged from the prompt's graph alone: well-formed,
    starts at S, every step follows an edge, ends at E, visits no node twice. In a tree this holds
    for exactly one path, the answer, so it can serve as a metric without the stored answer."""
    nodes = parse_path(completion)
    if nodes is None:
        return False
    start, end, entries = parse_prompt(prompt)
    adjacency = dict(entries)
    return (nodes[0] == start and nodes[-1] == end and len(set(nodes)) == len(nodes)
            and all(v in adjacency.get(u, ()) for u, v in zip(nodes, nodes[1:])))


def valid_path_rate(prompts: list[str], completions: list[str]) -> float:
    """The fraction of completions that `valid_path` accepts (0.0 for none)."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    return sum(map(valid_path, prompts, completions)) / len(prompts) if prompts else 0.0


class _Maze(Task):
    alphabet = MAZE_TOKENS
    draw_tree = staticmethod(random_tree)
    composes_around_unfinished = True  # a cut whose answer did not finish is skipped; the others still vote

    def _shape(self, level) -> tuple[int, int]:
        """(nodes, hops) of a level."""
        raise NotImplementedError

    def _level(self, num_nodes: int, hops: int) -> int:
        raise NotImplementedError

    def sample(self, level, rng):
        num_nodes, hops = self._shape(level)
        start, end, adjacency = self.draw_tree(num_nodes, hops, rng)
        order = list(adjacency)
        rng.shuffle(order)
        entries = []
        for node in order:
            nbs = list(adjacency[node])
            rng.shuffle(nbs)
            entries.append((node, tuple(nbs)))
        return Problem(level, (start, end, tuple(entries)))

    def prompt(self, problem):
        return format_prompt(*problem.operands)

    def answer(self, problem):
        start, end, entries = problem.operands
        path = shortest_path(dict(entries), start, end)
        return ">".join(map(str, path))

    def parse(self, prompt):
        start, end, entries = parse_prompt(prompt)
        path = shortest_path(dict(entries), start, end)
        if path is None:
            raise ValueError(f"no path from {start} to {end} in {prompt!r}")
        return Problem(self._level(len(entries), len(path) - 1), (start, end, entries))

    def max_answer_len(self, prompt):
        # A path visits each node at most once: at most N labels and N-1 `>` (N = nodes in the prompt).
        return 2 * (prompt.count("-") + 1) - 1

    def plausible(self, prompt, completion):
        """Form only: a well-formed path from S to E over nodes of the prompt, no node twice, within
        the bound. Edges are not checked (that would verify the answer; see the module docstring)."""
        nodes = parse_path(completion)
        if nodes is None:
            return False
        start, end, entries = parse_prompt(prompt)
        known = {node for node, _ in entries}
        return (nodes[0] == start and nodes[-1] == end and len(set(nodes)) == len(nodes)
                and known.issuperset(nodes))

    def follows_edges(self, prompt, completion) -> bool:
        """The `path` filter's check: the completion walks the prompt's own edges from S to E
        (`valid_path`, from the prompt alone; in a tree only the answer does)."""
        return valid_path(prompt, completion)

    def pieces(self, prompt, max_piece):
        """`S>M#...=` and `M>E#...=` on the same tree for every other node M, in the prompt's order (None
        for a tree of S and E alone). `max_piece` is not read: a piece's hops are unknown until solved."""
        start, end, cuts = self._cuts(prompt)
        body = prompt[prompt.index("#"):]
        return [f"{a}>{b}{body}" for m in cuts for a, b in ((start, m), (m, end))] or None

    def answered_pieces(self, prompt, max_piece):
        # The model answers every piece itself: cutting the pieces again would label N^2 prompts.
        return self.pieces(prompt, max_piece) or []

    def compose(self, prompt, pieces, answers):
        """The path the model's answers to the pieces agree with most, or None (no cut makes a path, or
        two tie). A cut M makes a path where the answers S..M and M..E are well-formed and meet only at M;
        paths rank by the cuts whose two answers both are their parts (S..M and M..E, M on the path), then
        by the single pieces whose answer is, so a cut where the model is right on one side still counts
        (it may not know 1-hop mazes). Edges are never read (that is the `path` filter's check): a run
        without it labels from the model alone."""
        start, end, cuts = self._cuts(prompt)
        paths = [parse_path(answer or "") for answer in answers]  # None: unfinished or malformed
        heads, tails = dict(zip(cuts, paths[::2])), dict(zip(cuts, paths[1::2]))
        joined = {tuple(heads[m] + tails[m][1:]) for m in cuts if heads[m] and tails[m]
                  and (heads[m][0], heads[m][-1], tails[m][0], tails[m][-1]) == (start, m, m, end)}
        scores = {path: self._agreement(path, heads, tails) for path in joined if len(set(path)) == len(path)}
        ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)[:2]
        if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
            return None
        return ">".join(map(str, ranked[0][0]))

    @staticmethod
    def _agreement(path, heads, tails) -> tuple[int, int]:
        """(cuts whose two answers both are the path's parts, pieces whose answer is)."""
        parts = [(heads.get(m) == list(path[: i + 1]), tails.get(m) == list(path[i:]))
                 for i, m in enumerate(path[1:-1], 1)]
        return sum(a and b for a, b in parts), sum(a + b for a, b in parts)

    @staticmethod
    def _cuts(prompt) -> tuple[int, int, list[int]]:
        """(S, E, every other node in the prompt's order)."""
        start, end, entries = parse_prompt(prompt)
        return start, end, [node for node, _ in entries if node not in (start, end)]

    def num_problems(self, level):
        # A lower bound: each set of node labels and each order of the entries gives another prompt.
        num_nodes, _ = self._shape(level)
        return math.perm(MAX_LABEL, num_nodes)

    def num_tokens(self, text):
        return len(_TOKEN.findall(text))


@register_task
class MazeHops(_Maze):
    """Difficulty = hops from S to E, on trees of `num_nodes` (30) nodes."""

    name = "maze_hops"
    num_nodes = 30

    def _shape(self, level):
        return self.num_nodes, level

    def _level(self, num_nodes, hops):
        return hops


@register_task
class MazeNodes(_Maze):
    """Difficulty = nodes in the tree, with S and E `hops` (9) apart."""

    name = "maze_nodes"
    hops = 9

    def _shape(self, level):
        return level, self.hops

    def _level(self, num_nodes, hops):
        return num_nodes


@register_task
class MazeHops15(MazeHops):
    """`maze_hops` on trees of 15 nodes (at most 14 hops): prompts of about 90 tokens instead of 180, so
    a training step costs about half, for runs sized to CPUs."""

    name = "maze_hops_15"
    num_nodes = 15


@register_task
class MazeChain15(MazeHops15):
    """`maze_hops_15` on chains: every node has one or two neighbors, so how often a label occurs in the
    prompt says nothing about the path. A diagnostic: a model must read the entries to answer."""

    name = "maze_chain_15"
    draw_tree = staticmethod(random_chain)
