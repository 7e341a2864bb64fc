"""Throughput of si-hf's labeling and training against the plain Hugging Face baseline, side by side.

    python scripts/bench.py            # every target, the sizes of docs/BENCHMARKS.md (about 6 minutes on 2 cores)
    python scripts/bench.py --quick    # the same tables on smaller sizes (a minute or two)
    python scripts/bench.py --targets labeling --label_models tiny --label_tasks copy

Prints one markdown table per target:

- labeling: problems labeled per second with greedy decoding. Baseline: the si-hf model itself through
  `model.generate` as a user would call it (left-padded batches, greedy, max_new_tokens, eos/pad ids).
  Reference only: a `LlamaForCausalLM` of the same shape (RoPE; Llama cannot switch it off) through the
  same `generate` call. si-hf: `greedy_label(..., backend="fast")`. Same weights, same prompts; the
  outputs of the fast path and of `generate` on the si-hf model are compared problem by problem.
- training: useful tokens per second (the tokens of prompt, answer and EOS; no padding) through a whole
  round: the mixture, tokenization, the Trainer and its steps. Baseline: `Trainer` + `LlamaForCausalLM`
  of the same shape, a per-example tokenizing `map`, `DataCollatorForSeq2Seq` padding each batch.
  si-hf: the round's own code path (`mixture`, `tokenize`, `make_trainer`). Both train on the same
  mixture with the same optimizer, schedule, batch size and seed.
- memory: peak resident memory of a shortened tiny copy run (full-size data, fewer steps), and of
  labeling a small and a 8x larger problem set (each in a fresh process).
"""

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from datasets import disable_progress_bars  # noqa: E402
from transformers import (  # noqa: E402
    DataCollatorForSeq2Seq,
    LlamaConfig,
    LlamaForCausalLM,
    PrinterCallback,
    Trainer,
    TrainingArguments,
)
from transformers.utils import logging as hf_logging  # noqa: E402

import si_hf  # noqa: E402,F401
from si_hf import SIConfig, SIForCausalLM, build_tokenizer  # noqa: E402
from si_hf.config import Recipe  # noqa: E402
from si_hf.data import base_dataset, mixture, tokenize, truth_dataset  # noqa: E402
from si_hf.labeling import greedy_label  # noqa: E402
from si_hf.tasks import get_task  # noqa: E402
from si_hf.training import make_trainer  # noqa: E402

MODELS = {
    # name: (layers, hidden, heads, intermediate)
    "tiny": (3, 128, 4, 512),
    "paper": (6, 384, 6, 1536),
}
LABEL_LEVELS = {"copy": 30, "reverse_addition": 20}


def si_model(tokenizer, shape, seed=0, init=0.02):
    layers, hidden, heads, inter = shape
    torch.manual_seed(seed)
    config = SIConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, initializer_range=init, pad_token_id=tokenizer.pad_token_id,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return SIForCausalLM(config).eval()


def llama_model(tokenizer, shape, seed=0, init=0.02):
    layers, hidden, heads, inter = shape
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=inter,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=512, rms_norm_eps=1e-6, initializer_range=init,
                         tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config).eval()


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -- labeling ------------------------------------------------------------------------------------

@torch.inference_mode()
def generate_labels(model, tokenizer, prompts, bounds, batch_size):
    """The plain use of `generate`: left-padded batches, greedy, EOS and pad ids, decoded to text."""
    out = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start:start + batch_size], padding=True, return_tensors="pt").to(model.device)
        gen = model.generate(**batch, max_new_tokens=max(bounds[start:start + batch_size]) + 1, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        for row, bound in zip(gen[:, batch["input_ids"].shape[1]:].tolist(), bounds[start:start + batch_size]):
            row = row[: bound + 1]
            finished = tokenizer.eos_token_id in row
            if finished:
                row = row[: row.index(tokenizer.eos_token_id)]
            out.append((tokenizer.decode(row, skip_special_tokens=True), finished))
    return out


def timed(fns: dict, repeats: int):
    """{name: (result, best seconds)}; the functions take turns, `repeats` rounds (slow drifts of a
    shared machine then touch them alike)."""
    best = {name: (None, float("inf")) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            result = fn()
            best[name] = (result, min(best[name][1], time.perf_counter() - start))
    return best


def bench_labeling(args, tokenizer):
    rows = []
    for model_name in args.label_models:
        shape = MODELS[model_name]
        n = args.label_n[model_name]
        for task_name in args.label_tasks:
            task = get_task(task_name)
            level = LABEL_LEVELS[task_name]
            rng = random.Random(0)
            prompts = [task.prompt(task.sample(level, rng)) for _ in range(n)]
            bounds = [task.max_answer_len(p) for p in prompts]
            model = si_model(tokenizer, shape, init=args.init).to(args.device)
            llama = llama_model(tokenizer, shape, init=args.init).to(args.device)
            bs = args.label_batch_size
            generate_labels(model, tokenizer, prompts[:8], bounds[:8], bs)  # warm-up
            greedy_label(model, tokenizer, prompts[:8], bounds[:8], batch_size=bs, disable_tqdm=True)
            runs = timed({
                "generate": lambda: generate_labels(model, tokenizer, prompts, bounds, bs),
                "fast": lambda: greedy_label(model, tokenizer, prompts, bounds, batch_size=bs, disable_tqdm=True),
                "llama": lambda: generate_labels(llama, tokenizer, prompts, bounds, bs),
            }, args.repeats)
            (ref, t_gen), (fast, t_fast), (_, t_llama) = runs["generate"], runs["fast"], runs["llama"]
            same = sum((lab.completion, lab.finished) == r for lab, r in zip(fast, ref))
            finished = sum(lab.finished for lab in fast)
            rows.append([f"{model_name} {shape[0]}x{shape[1]}", f"{task_name} @{level}", n, bs,
                         f"{n / t_llama:.0f}", f"{n / t_gen:.0f}", f"{n / t_fast:.0f}", f"{t_gen / t_fast:.2f}x",
                         f"{same}/{n}" + ("" if same == n else " MISMATCH"), f"{finished}/{n}"])
            print(f"  labeling {model_name} {task_name}: generate {n / t_gen:.0f}/s, fast {n / t_fast:.0f}/s",
                  flush=True)
            assert same == n, f"fast labels differ from generate's on {n - same} of {n} problems"
    return table(["model", "task", "problems", "batch", "Llama (RoPE) generate /s", "baseline: si-hf generate /s",
                  "si-hf fast /s", "ratio", "outputs equal", "finished with EOS"], rows)


# -- training ------------------------------------------------------------------------------------

def train_recipe(args, **overrides):
    layers, hidden, heads, inter = MODELS["tiny"]
    fields = dict(task="copy", num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                  intermediate_size=inter, batch_size=128, learning_rate=1e-3, round_steps=args.train_steps,
                  round_warmup_steps=args.train_steps // 10, round_decay_steps=args.train_steps // 2,
                  logging_steps=10**9, disable_tqdm=True, report_to="none", seed=0)
    fields.update(overrides)
    return Recipe(**fields).validate()


def round_inputs(args):
    """A mid-run round of the tiny copy recipe: base lengths 1-10, labeled rounds at 11..newest."""
    task = get_task("copy")
    base = base_dataset(task, 1, 10, args.base_examples, seed=0, exclude=set())
    rng = random.Random(1)
    older = [truth_dataset(task, [task.sample(level, rng) for _ in range(4000)], level - 10)
             for level in range(11, args.newest_level)]
    newest = truth_dataset(task, [task.sample(args.newest_level, rng) for _ in range(4000)], args.newest_level - 10)
    return newest, [base, *older]


def baseline_round(args, tokenizer, newest, older, scratch):
    """Plain Trainer + LlamaForCausalLM: tokenize row by row with `map`, pad each batch with the
    standard seq2seq collator (attention mask, -100 labels)."""
    recipe = train_recipe(args)
    start = time.perf_counter()
    rows = mixture(newest, older, recipe.round_steps * recipe.batch_size, recipe.newest_fraction, recipe.seed + 1)
    tokenizer = build_tokenizer()
    tokenizer.padding_side = "right"
    eos = tokenizer.eos_token_id

    def encode(example):
        prompt = tokenizer(example["prompt"])["input_ids"]
        ids = tokenizer(example["prompt"] + example["completion"])["input_ids"] + [eos]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * len(prompt) + ids[len(prompt):]}

    train_set = rows.map(encode, remove_columns=rows.column_names)
    torch.manual_seed(recipe.seed)
    model = llama_model(tokenizer, MODELS["tiny"]).train()
    targs = TrainingArguments(
        output_dir=scratch, max_steps=recipe.round_steps, per_device_train_batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate, lr_scheduler_type="warmup_stable_decay",
        warmup_steps=recipe.round_warmup_steps,
        lr_scheduler_kwargs={"num_decay_steps": recipe.round_decay_steps, "min_lr_ratio": recipe.min_lr_ratio,
                             "decay_type": "cosine"},
        optim="adamw_torch", weight_decay=recipe.weight_decay, adam_beta1=recipe.adam_beta1,
        adam_beta2=recipe.adam_beta2, adam_epsilon=recipe.adam_epsilon, max_grad_norm=recipe.max_grad_norm,
        logging_steps=10**9, save_strategy="no", report_to="none", seed=recipe.seed, disable_tqdm=True,
        dataloader_pin_memory=False,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=train_set,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
    trainer.remove_callback(PrinterCallback)
    result = trainer.train()
    seconds = time.perf_counter() - start
    return seconds, result.training_loss, sum(len(ids) for ids in train_set["input_ids"])


def si_round(args, tokenizer, newest, older, scratch, split=True):
    """The round's own path: mixture -> tokenize -> make_trainer -> train."""
    recipe = train_recipe(args)
    start = time.perf_counter()
    rows = mixture(newest, older, recipe.round_steps * recipe.batch_size, recipe.newest_fraction, recipe.seed + 1)
    train_set = tokenize(rows, tokenizer)
    torch.manual_seed(recipe.seed)
    model = si_model(tokenizer, MODELS["tiny"]).train()
    trainer = make_trainer(model, tokenizer, train_set, recipe, 1, scratch)
    if not split:
        trainer.data_collator.split_pieces = False
    trainer.remove_callback(PrinterCallback)
    result = trainer.train()
    seconds = time.perf_counter() - start
    return seconds, result.training_loss, int(sum(train_set["length"]))


def bench_training(args, tokenizer):
    newest, older = round_inputs(args)
    with tempfile.TemporaryDirectory() as scratch:
        # Untimed warm-up of both paths (first-use costs of the libraries would fall on the first run).
        warm = argparse.Namespace(**{**vars(args), "train_steps": 3})
        baseline_round(warm, tokenizer, newest, older, scratch)
        si_round(warm, tokenizer, newest, older, scratch)
        t_base, loss_base, tokens = baseline_round(args, tokenizer, newest, older, scratch)
        print(f"  training baseline: {tokens / t_base:.0f} tokens/s", flush=True)
        t_plain, loss_plain, tokens_plain = si_round(args, tokenizer, newest, older, scratch, split=False)
        print(f"  training si-hf, one padded batch: {tokens_plain / t_plain:.0f} tokens/s", flush=True)
        t_si, loss_si, tokens_si = si_round(args, tokenizer, newest, older, scratch)
        print(f"  training si-hf: {tokens_si / t_si:.0f} tokens/s", flush=True)
    assert tokens == tokens_si == tokens_plain
    steps = args.train_steps
    rows = [
        ["baseline: Trainer + LlamaForCausalLM, padded batches", steps, tokens, f"{t_base:.1f}",
         f"{tokens / t_base:.0f}", "1.00x", f"{loss_base:.4f}"],
        ["si-hf, one padded batch per step", steps, tokens, f"{t_plain:.1f}", f"{tokens / t_plain:.0f}",
         f"{t_base / t_plain:.2f}x", f"{loss_plain:.4f}"],
        ["si-hf (default: length-split batches)", steps, tokens, f"{t_si:.1f}", f"{tokens / t_si:.0f}",
         f"{t_base / t_si:.2f}x", f"{loss_si:.4f}"],
    ]
    return table(["round", "steps", "useful tokens", "seconds", "useful tokens/s", "ratio", "mean train loss"], rows)


# -- memory --------------------------------------------------------------------------------------

PEAK_RSS = """
import atexit, os, runpy, sys

def report():
    with open("/proc/self/status") as fh:
        peak = next(line.split()[1] for line in fh if line.startswith("VmHWM:"))
    with open(os.environ["SI_HF_PEAK_RSS_FILE"], "w") as out:
        out.write(peak)

atexit.register(report)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def peak_rss_mib(script, argv, env) -> float:
    """Peak resident memory (VmHWM, in the child itself: a forked parent's pages do not count) of
    `python script argv...`."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**env, "SI_HF_PEAK_RSS_FILE": os.path.join(tmp, "peak")}
        log = os.path.join(tmp, "log")
        with open(log, "w") as fh:
            done = subprocess.run([sys.executable, "-c", PEAK_RSS, script, *argv], env=env, cwd=REPO_ROOT,
                                  stdout=fh, stderr=subprocess.STDOUT)
        if done.returncode:
            raise RuntimeError(f"{script} failed:\n{open(log).read()[-3000:]}")
        with open(env["SI_HF_PEAK_RSS_FILE"]) as fh:
            return int(fh.read()) / 1024


LABEL_ONLY = """
import random, sys, torch
sys.path.insert(0, {root!r})
import si_hf
from si_hf import build_tokenizer
from si_hf.labeling import greedy_label
from si_hf.tasks import get_task
sys.path.insert(0, {scripts!r})
from bench import si_model, MODELS
torch.set_num_threads({threads})
tok = build_tokenizer(); task = get_task("copy"); rng = random.Random(0)
prompts = [task.prompt(task.sample(20, rng)) for _ in range({n})]
greedy_label(si_model(tok, MODELS["tiny"]), tok, prompts, [task.max_answer_len(p) for p in prompts],
             batch_size={bs}, disable_tqdm=True)
"""


def bench_memory(args):
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.memory_label_n, 8 * args.memory_label_n):
            script = os.path.join(tmp, "label.py")
            with open(script, "w") as fh:
                fh.write(LABEL_ONLY.format(root=str(REPO_ROOT), scripts=str(REPO_ROOT / "scripts"),
                                           threads=args.threads, n=n, bs=args.label_batch_size))
            mib = peak_rss_mib(script, [], env)
            rows.append([f"label {n} copy problems (level 20, tiny model)", f"{mib:.0f}"])
            print(f"  memory labeling {n}: {mib:.0f} MiB", flush=True)
        argv = ["--config", str(REPO_ROOT / "recipes" / "copy" / "tiny.yaml"),
                "--output_dir", os.path.join(tmp, "run"),
                "--base_examples", "192000", "--base_steps", str(args.memory_steps), "--base_warmup_steps", "0",
                "--base_decay_steps", "0", "--num_rounds", str(args.memory_rounds), "--round_steps",
                str(args.memory_steps), "--round_warmup_steps", "0", "--round_decay_steps", "0", "--disable_tqdm",
                "true", "--num_threads", str(args.threads)]
        mib = peak_rss_mib(str(REPO_ROOT / "scripts" / "run_rounds.py"), argv, env)
    rows.append([f"tiny copy run (recipes/copy/tiny.yaml): 192,000 base examples, {args.memory_rounds} rounds of "
                 f"4,000 labels, {args.memory_steps} steps per round, full evaluation sets", f"{mib:.0f}"])
    print(f"  memory run: {mib:.0f} MiB", flush=True)
    return table(["process", "peak RSS MiB"], rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes: the same tables in a minute or two")
    p.add_argument("--targets", default="labeling,training,memory")
    p.add_argument("--label_models", default="tiny,paper")
    p.add_argument("--label_tasks", default="copy,reverse_addition")
    p.add_argument("--label_n_tiny", type=int, default=None, help="problems per labeling row, tiny model")
    p.add_argument("--label_n_paper", type=int, default=None, help="problems per labeling row, paper model")
    p.add_argument("--label_batch_size", type=int, default=256, help="batch of both the baseline and the fast path")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per measurement; the best counts")
    p.add_argument("--init", type=float, default=0.02, help="initializer_range of the (untrained) models")
    p.add_argument("--train_steps", type=int, default=None)
    p.add_argument("--base_examples", type=int, default=192000)
    p.add_argument("--newest_level", type=int, default=20, help="the round's newly labeled level (base is 1-10)")
    p.add_argument("--memory_label_n", type=int, default=None)
    p.add_argument("--memory_steps", type=int, default=None)
    p.add_argument("--memory_rounds", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores this process may use)")
    args = p.parse_args(argv)
    quick = args.quick
    args.targets = args.targets.split(",")
    args.label_models = args.label_models.split(",")
    args.label_tasks = args.label_tasks.split(",")
    args.label_n = {"tiny": args.label_n_tiny or (512 if quick else 2048),
                    "paper": args.label_n_paper or (64 if quick else 256)}
    args.repeats = args.repeats or (1 if quick else 2)
    args.train_steps = args.train_steps or (20 if quick else 100)
    args.memory_label_n = args.memory_label_n or (500 if quick else 2000)
    args.memory_steps = args.memory_steps or (10 if quick else 50)
    args.memory_rounds = args.memory_rounds or (1 if quick else 2)
    if args.threads is None:
        args.threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(args.threads)
    disable_progress_bars()
    hf_logging.set_verbosity_error()

    tokenizer = build_tokenizer()
    args.device = device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"# si-hf benchmark: torch {torch.__version__}, {device}, {args.threads} threads"
          f"{' (quick)' if quick else ''}", flush=True)
    sections = []
    if "labeling" in args.targets:
        sections.append(("Labeling (greedy, problems/s)", bench_labeling(args, tokenizer)))
    if "training" in args.targets:
        sections.append(("Training round (tiny model, copy)", bench_training(args, tokenizer)))
    if "memory" in args.targets:
        sections.append(("Memory", bench_memory(args)))
    for title, text in sections:
        print(f"\n## {title}\n\n{text}")


if __name__ == "__main__":
    main()
