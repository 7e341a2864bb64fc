"""Shared fixtures: the tokenizer, tiny models, and micro recipes written into a temporary directory.

Everything runs on the CPU. Tiny models gain nothing from several threads and lose a lot when the
machine is shared, so torch is pinned to one thread (subprocesses get OMP_NUM_THREADS=1).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import json  # noqa: E402
import random  # noqa: E402
import runpy  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

import si_hf  # noqa: E402,F401  (registers the Auto classes)
from si_hf import SIConfig, SIForCausalLM, build_tokenizer  # noqa: E402

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]

# A recipe small enough to run a few rounds in seconds on one CPU thread.
MICRO_RECIPE = {
    "task": "copy",
    "seed": 0,
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "position_encoding": "nope",
    "base_min_level": 1,
    "base_max_level": 4,
    "base_steps": 200,
    "base_warmup_steps": 20,
    "base_decay_steps": 50,
    "batch_size": 32,
    "learning_rate": 3.0e-3,
    "num_rounds": 2,
    "round_steps": 20,
    "round_warmup_steps": 0,
    "round_decay_steps": 10,
    "labels_per_round": 200,
    "filters": ["length"],
    "eval_min_level": 1,
    "eval_max_level": 6,
    "eval_size": 50,
    "label_batch_size": 256,
    "logging_steps": 50,
    "disable_tqdm": True,
}
# The micro recipe, smaller still (overrides): for runs that test the loop's plumbing, not learning.
SMALL = {"hidden_size": 32, "intermediate_size": 64, "batch_size": 16, "base_steps": 30, "base_warmup_steps": 3,
         "base_decay_steps": 10, "round_steps": 5, "round_decay_steps": 2, "labels_per_round": 64, "eval_size": 20,
         "eval_max_level": 5}


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def make_config(tokenizer):
    """SIConfig factory: 2 layers, hidden 32, 4 heads, with the tokenizer's vocabulary and ids."""

    def factory(**overrides):
        kwargs = dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        kwargs.update(overrides)
        return SIConfig(**kwargs)

    return factory


@pytest.fixture(scope="session")
def make_model(make_config):
    """Tiny SIForCausalLM factory (seeded, eval mode)."""

    def factory(seed=0, **overrides):
        torch.manual_seed(seed)
        return SIForCausalLM(make_config(**overrides)).eval()

    return factory


@pytest.fixture(scope="session")
def trained_copy_model(make_model, tokenizer):
    """A tiny model trained for a few hundred steps on copy (levels 1-4): it emits EOS often, at
    varying positions, without being perfect."""
    from datasets import Dataset

    from si_hf.data import PromptMaskingCollator, tokenize
    from si_hf.tasks import get_task

    task = get_task("copy")
    rng = random.Random(0)
    problems = [task.sample(rng.randint(1, 4), rng) for _ in range(4096)]
    ds = tokenize(
        Dataset.from_dict({"prompt": [task.prompt(p) for p in problems],
                           "completion": [task.answer(p) for p in problems]}),
        tokenizer,
    )
    collate = PromptMaskingCollator(tokenizer.pad_token_id)
    model = make_model(seed=1, hidden_size=64, intermediate_size=128).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rows = list(ds)
    for step in range(120):
        batch = collate(rows[(step * 32) % len(rows):][:32])
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


@pytest.fixture(scope="session")
def write_recipe():
    """`write_recipe(directory, name="run", **overrides)` writes a micro recipe YAML into `directory`
    and returns the argv for scripts/run_rounds.py (output in `directory/name`)."""

    def factory(directory, name="run", **overrides):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        recipe = {**MICRO_RECIPE, **overrides}
        path = directory / f"{name}.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        return ["--config", str(path), "--output_dir", str(directory / name)]

    return factory


@pytest.fixture
def recipe_factory(tmp_path, write_recipe):
    """Function-scoped shortcut: `recipe_factory(**overrides)` -> argv writing into tmp_path."""

    def factory(name="run", **overrides):
        return write_recipe(tmp_path, name=name, **overrides)

    return factory


@pytest.fixture(scope="session")
def run_rounds_main():
    """`main(argv)` of scripts/run_rounds.py (loaded from the file, not executed as __main__)."""
    return runpy.run_path(str(REPO_ROOT / "scripts" / "run_rounds.py"))["main"]


class ScriptedHead(torch.nn.Module):
    """Replaces `lm_head`: the i-th decoding step of every row predicts `script[i]` (the last entry
    repeats). `restart()` is called on every forward over more than one input token (a prefill),
    so the script follows both the bucketed KV-cache loop and `generate` with a cache."""

    def __init__(self, vocab_size, script):
        super().__init__()
        self.vocab_size, self.script, self.step = vocab_size, list(script), 0

    def restart(self):
        self.step = 0

    def forward(self, hidden):
        token = self.script[min(self.step, len(self.script) - 1)]
        self.step += 1
        logits = torch.zeros(*hidden.shape[:-1], self.vocab_size, dtype=hidden.dtype, device=hidden.device)
        logits[..., token] = 1.0
        return logits


@pytest.fixture
def scripted_model(make_model, tokenizer):
    """`scripted_model(["1", "2", "<eos>"])`: a tiny model whose greedy output follows the script
    (tokens given as strings) whatever the prompt."""

    def factory(tokens):
        model = make_model()
        head = ScriptedHead(len(tokenizer), tokenizer.convert_tokens_to_ids(list(tokens)))
        model.lm_head = head

        def maybe_restart(module, args, kwargs):
            ids = kwargs.get("input_ids")
            if ids is None and args:
                ids = args[0]
            if ids is not None and ids.shape[1] > 1:
                head.restart()

        model.model.register_forward_pre_hook(maybe_restart, with_kwargs=True)
        return model

    return factory


# -- a Hub on loopback -----------------------------------------------------------------------------
# A token the runs must never write anywhere (the tests look for it in everything they produce).
LOCAL_HUB_TOKEN = "hf_local-test-token-must-never-be-written"


class LocalHub:
    """tests/hub_server.py running on 127.0.0.1: olah for reads, a git write front for writes."""

    def __init__(self, endpoint: str, root: Path):
        self.endpoint, self.root = endpoint, root
        self.repos = root / "repos"

    def env(self, home: str) -> dict:
        """Environment of a client process: this Hub, the dummy token, its own HF_HOME (a cache)."""
        drop = {"HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update(HF_ENDPOINT=self.endpoint, HF_TOKEN=LOCAL_HUB_TOKEN, HF_HUB_DISABLE_XET="1",
                   HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_UPDATE_CHECK="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
                   HF_HOME=str(self.root / "homes" / home), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
        return env

    def control(self, method: str, path: str, body: dict | None = None):
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.endpoint + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def fail(self, path: str, *, method: str = "*", status: int = 503, skip: int = 0, count: int = 1000):
        """Let `skip` requests matching the `path` regex through, then answer `status` to `count` more."""
        self.control("POST", "/_test/faults", {"path": path, "method": method, "status": status, "skip": skip,
                                               "count": count})

    def clear_faults(self):
        self.control("DELETE", "/_test/faults")

    def requests(self) -> list[str]:
        return self.control("GET", "/_test/requests")


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory):
    """Starts the local Hub once per session (on first use) and stops it at the end."""
    import select
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("local_hub")
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "tests" / "hub_server.py"), "--root", str(root / "repos")],
        stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("READY "):
            proc.kill()
            pytest.fail(f"the local Hub did not start: {line!r}\n{(root / 'server.log').read_text()[-3000:]}")
        yield LocalHub(f"http://127.0.0.1:{int(line.split()[1])}", root)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
