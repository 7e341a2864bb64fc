"""What users do with published rounds, through the real clients, in a process of its own.

    python tests/hub_clients.py SCENARIO ARGS_JSON RESULT_JSON

huggingface_hub, datasets and evaluate read HF_ENDPOINT when imported, so every scenario runs in a
fresh process with the environment of the local Hub (see `local_hub` in conftest.py). Each scenario
records what it saw into RESULT_JSON; the tests assert on it.
"""

import json
import os
import sys
from pathlib import Path


def load_local_weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def same_tensors(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def refs(api, repo, repo_type):
    found = api.list_repo_refs(repo, repo_type=repo_type)
    return {"branches": {r.name: r.target_commit for r in found.branches},
            "tags": {r.name: r.target_commit for r in found.tags}}


def with_si_hf(args: dict) -> dict:
    """Refs, downloads by revision, data by revision and config, the Auto classes without remote
    code, the card, and the metric from a Space."""
    import evaluate
    import torch
    from datasets import load_dataset, load_from_disk
    from huggingface_hub import HfApi, ModelCard, snapshot_download
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    import si_hf
    from si_hf.hub import push_metric

    api = HfApi()
    model_repo, data_repo, out = args["model_repo"], args["data_repo"], Path(args["out"])
    result = {"model_refs": refs(api, model_repo, "model"), "data_refs": refs(api, data_repo, "dataset"), "rounds": {}}
    for k in args["rounds"]:
        rev = f"round-{k}"
        snapshot = Path(snapshot_download(model_repo, revision=rev))
        local = out / rev
        rows = load_dataset(data_repo, revision=rev, split="train")
        by_config = load_dataset(data_repo, f"round_{k}", split="train")
        local_rows = load_from_disk(str(local / "data"))
        result["rounds"][k] = {
            "files": sorted(p.name for p in snapshot.iterdir()),
            "commit": snapshot.name,
            "same_weights": same_tensors(load_local_weights(snapshot / "model.safetensors"),
                                         load_local_weights(local / "model" / "model.safetensors")),
            "same_rows": rows.to_dict() == local_rows.to_dict() and len(rows) > 0,
            "same_rows_by_config": by_config.to_dict() == local_rows.to_dict(),
            "eval": json.loads((snapshot / "eval.json").read_text()),
            "summary_rounds": [json.loads(line)["round"]
                               for line in (snapshot / "summary.jsonl").read_text().splitlines()],
            "auto_map": json.loads((snapshot / "config.json").read_text()).get("auto_map"),
            "plot_is_png": (snapshot / "accuracy_by_level.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n",
        }
        card = ModelCard.load(snapshot / "README.md")
        result["rounds"][k]["card"] = {
            "readme": (snapshot / "README.md").read_text(), "text": card.text, "datasets": card.data.datasets,
            "library_name": card.data.library_name,
            "metrics": {r.dataset_config: r.metric_value for r in card.data.eval_results or []},
        }
    last = f"round-{args['rounds'][-1]}"
    main_commit = result["model_refs"]["branches"]["main"]
    result["main_is_last_round"] = main_commit == result["model_refs"]["tags"][last]
    result["data_main_rows_are_last_round"] = (
        load_dataset(data_repo, split="train").to_dict() == load_from_disk(str(out / last / "data")).to_dict())

    rev = f"round-{args['rounds'][1]}"
    causal = AutoModelForCausalLM.from_pretrained(model_repo, revision=rev)
    bare = AutoModel.from_pretrained(model_repo, revision=rev)
    tokenizer = AutoTokenizer.from_pretrained(model_repo, revision=rev)
    local_causal = AutoModelForCausalLM.from_pretrained(out / rev / "model")
    ids = tokenizer(["1234="], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        same_logits = torch.equal(causal(ids).logits, local_causal(ids).logits)
    result["auto"] = {
        "causal": type(causal).__module__ + "." + type(causal).__name__,
        "bare": type(bare).__module__ + "." + type(bare).__name__,
        "is_si_hf": isinstance(causal, si_hf.SIForCausalLM) and isinstance(bare, si_hf.SIModel),
        "same_logits": same_logits,
        "tokens": tokenizer.convert_ids_to_tokens(ids[0].tolist()),
    }

    space = push_metric(args["metric_space"])
    metric = evaluate.load(space)
    result["metric"] = {"space": space, "value": metric.compute(predictions=["12", "3"], references=["12", "4"],
                                                                levels=[2, 1])}
    return result


def without_si_hf(args: dict) -> dict:
    """Remote code: the model, its tokenizer and the round's data, with si_hf impossible to import."""
    sys.modules["si_hf"] = None  # `import si_hf` now raises ImportError, whatever is installed
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import si_hf  # noqa: F401

        importable = True
    except ImportError:
        importable = False
    rev = f"round-{args['round']}"
    model = AutoModelForCausalLM.from_pretrained(args["model_repo"], revision=rev, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(args["model_repo"], revision=rev, trust_remote_code=True)
    rows = load_dataset(args["data_repo"], revision=rev, split="train")
    local = load_local_weights(Path(args["out"]) / rev / "model" / "model.safetensors")
    ids = tokenizer(["1234="], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=3, do_sample=False)
    return {
        "si_hf_importable": importable,
        "si_hf_modules": sorted(name for name, mod in sys.modules.items() if name.startswith("si_hf") and mod),
        "class": type(model).__module__ + "." + type(model).__name__,
        "same_weights": same_tensors({k: v for k, v in model.state_dict().items()}, local),
        "tokens": tokenizer.convert_ids_to_tokens(ids[0].tolist()),
        "generated": out.shape[1] - ids.shape[1],
        "rows": len(rows),
        "levels": sorted(set(rows["level"])),
    }


SCENARIOS = {"with_si_hf": with_si_hf, "without_si_hf": without_si_hf}

if __name__ == "__main__":
    scenario, args_json, result_json = sys.argv[1:]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    outcome = SCENARIOS[scenario](json.loads(args_json))
    Path(result_json).write_text(json.dumps(outcome, indent=2, default=str))
