"""Labeling, confidence scoring and evaluation of one saved model, split between the processes of a launch.

    accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml tests/distributed_worker.py MODEL_DIR OUT.json

tests/test_distributed.py runs it with two processes and compares OUT.json with `compute` in one process.
"""

import json
import random
import sys

LEVELS = [1, 2, 3, 4, 5, 6]


def compute(model, tokenizer) -> dict:
    """What the loop computes with si_hf.distributed.map_split: labels, their confidence, an eval table;
    and which rows this process computed itself (`shares`, gathered from every process)."""
    from accelerate.utils import gather_object

    from si_hf.confidence import score_labels
    from si_hf.distributed import map_split, process_state
    from si_hf.evaluation import evaluate_levels
    from si_hf.labeling import greedy_label
    from si_hf.tasks import get_task

    state = process_state()
    task = get_task("copy")
    rng = random.Random(7)
    problems = [task.sample(level, rng) for level in LEVELS for _ in range(13)]  # 13: not divisible by 2
    prompts = [task.prompt(p) for p in problems]
    bounds = [task.max_answer_len(q) for q in prompts]
    groups = [p.level for p in problems]
    mine = []

    def label(share):
        mine.extend(share)
        return greedy_label(model, tokenizer, [prompts[i] for i in share], [bounds[i] for i in share],
                            batch_size=8, disable_tqdm=True)

    labels = map_split(label, range(len(prompts)), groups)
    scored = map_split(lambda share: score_labels(model, tokenizer, share, batch_size=8), labels, groups)
    eval_sets = {level: [task.sample(level, rng) for _ in range(9)] for level in LEVELS}
    ev = evaluate_levels(model, tokenizer, task, eval_sets, batch_size=8, disable_tqdm=True)
    return {
        "num_processes": state.num_processes,
        "distributed_type": str(state.distributed_type),
        "shares": gather_object([mine]) if state.num_processes > 1 else [mine],
        "labels": [[lab.prompt, lab.completion, lab.finished] for lab in labels],
        "confidence": [lab.confidence for lab in scored],
        "eval": json.loads(json.dumps({k: v for k, v in ev.items()})),
    }


def main(model_dir: str, out: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import si_hf  # noqa: F401  (registers the Auto classes)
    from si_hf.distributed import process_state

    torch.set_num_threads(1)
    state = process_state()
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    result = compute(model, tokenizer)
    if state.is_main_process:
        with open(out, "w") as fh:
            json.dump(result, fh)
    state.wait_for_everyone()


if __name__ == "__main__":
    main(*sys.argv[1:3])
