"""The package's shape: imports run one way (no module imports, at any depth of a function, a module
that imports it back), and every round is named and recorded by one module."""

import ast
import json
from pathlib import Path

import pytest
from synthetic_records import round_record

from si_hf import records
from si_hf.timing import PhaseTimes, phases_text

PACKAGE = Path(__file__).resolve().parents[1] / "si_hf"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the si_hf modules it imports anywhere (top level or inside functions)."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                targets |= {module, *(f"{module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        graph[name] = {t for t in targets if t in paths and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (its modules in order), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_sees_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_imports_run_one_way():
    graph = {name: deps for name, deps in import_graph().items() if name != "si_hf"}  # the package re-exports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    # The leaves: what everything may import without pulling in the loop, the Hub or the recipe.
    for leaf in ("si_hf.errors", "si_hf.records", "si_hf.timing"):
        assert graph[leaf] == set(), (leaf, graph[leaf])
    assert "si_hf.rounds" not in graph["si_hf.hub"] and "si_hf.hub" not in graph["si_hf.config"]


MAX_FUNCTION_LINES = 50


def test_every_function_reads_at_once():
    """No function or method in si_hf is longer than MAX_FUNCTION_LINES (signature and docstring included)."""
    lengths = {f"{path.relative_to(PACKAGE.parent)}:{node.name}": node.end_lineno - node.lineno + 1
               for path in PACKAGE.rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assert len(lengths) > 100  # the walk saw the package
    too_long = {name: n for name, n in lengths.items() if n > MAX_FUNCTION_LINES}
    assert not too_long, too_long


def test_round_names_and_summary_round_trip(tmp_path):
    assert records.round_name(3) == "round-3" and records.round_dir(tmp_path, 3) == tmp_path / "round-3"
    assert [records.round_number(n) for n in ("round-12", "round-x", "xround-1", "round-")] == [12, None, None, None]
    assert records.staging_dir(tmp_path, 2).name == ".round-2.tmp"
    assert records.parse_init_from("me/copy@round-4") == ("me/copy", 4)
    assert records.read_summary(tmp_path) == []
    rows = [round_record(k, 10 + k, {"1": 1.0}, labels=None if k == 0 else {"kept": k}, wall_seconds=1.5,
                         phase_seconds={"train": 1.0}) for k in range(3)]
    records.write_summary(tmp_path, rows)
    assert records.read_summary(tmp_path) == rows and records.read_summary(tmp_path, last=1) == rows[:2]
    lines = [json.loads(line) for line in (tmp_path / "summary.jsonl").read_text().splitlines()]
    assert lines == [rec.to_json() for rec in rows] and lines[2]["labels"]["kept"] == 2
    assert "probe" not in lines[0] and "corruption" not in lines[1]["labels"]  # absent, not null, when unset
    assert not list(tmp_path.glob("*.tmp"))
    untimed = records.without_timing(rows[0])
    assert (untimed.wall_seconds, untimed.phase_seconds, untimed.frontier) == (None, None, 10)


def test_a_record_with_unknown_fields_is_refused_by_name():
    data = round_record(0, 3, {"1": 1.0}).to_json()
    assert records.RoundRecord.from_json(data) == round_record(0, 3, {"1": 1.0})
    with pytest.raises(ValueError, match="unknown fields \\['colour'\\]"):
        records.RoundRecord.from_json({**data, "colour": "red"})


def test_phase_times_add_up_per_phase():
    timed = PhaseTimes()
    for _ in range(2):
        with timed("train"):
            pass
    with timed("label"):
        pass
    assert list(timed.record()) == ["label", "train"]  # loop order, not call order
    assert all(s >= 0 for s in timed.record().values())
    with pytest.raises(ValueError, match="unknown phase 'lunch'"):
        with timed("lunch"):
            pass
    assert phases_text({"train": 12.34, "save": 0.4}) == "train 12s, save 0s" and phases_text({}) == ""
