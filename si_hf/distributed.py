"""Several processes (`accelerate launch --num_processes N`): labeling and evaluation split between them.

Training needs nothing here: the Trainer runs DDP by itself under `accelerate launch`. Labeling, the
confidence pass and evaluation are per-row computations, so each process takes a share of the rows
(`PartialState.split_between_processes`, contiguous and in order), and the results are gathered back
into the original order on every process (`accelerate.utils.gather_object`): every process ends with
the full list, so all of them build the same round dataset and train on the same rows. Greedy decoding
gives a row the same output whatever batch it is in, so N processes label exactly as one does.

Under FSDP (version 2) the Trainer shards the model in place: after each round's training every process
gathers the full weights into a plain model (`unsharded_model`), which labels, evaluates, is saved, and
is sharded afresh by the next round's Trainer. Accelerate turns FSDP into DDP on the CPU; the Trainer
turns it back on there (`fsdp_on_cpu`), so FSDP runs on CPU processes over gloo (what the tests run).
"""

import copy
import os

import torch
from accelerate import PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, gather_object, parse_flag_from_env

from .errors import RecipeError


def map_split(fn, items, groups=None) -> list:
    """`fn(items)` computed by all processes together: each process calls `fn` on its share of `items`
    (a list; `fn` returns one result per item, in order) and every process gets all the results, in the
    order of `items`.

    `groups` (optional, one hashable key per item, e.g. its level) splits each group on its own, so every
    process gets its share of every level rather than whole levels (the cost of a row grows with its level).
    With one process this is `fn(items)`, unchanged.
    """
    items = list(items)
    state = PartialState()
    if state.num_processes == 1:
        return list(fn(items))
    if groups is None:
        members = [list(range(len(items)))]
    else:
        if len(groups) != len(items):
            raise ValueError(f"map_split: {len(groups)} group keys for {len(items)} items")
        by_key: dict = {}
        for i, key in enumerate(groups):
            by_key.setdefault(key, []).append(i)
        members = list(by_key.values())
    mine = []
    for indices in members:
        with state.split_between_processes(indices) as share:
            mine += share
    out = list(fn([items[i] for i in mine])) if mine else []
    if len(out) != len(mine):
        raise ValueError(f"map_split: {len(out)} results for {len(mine)} items")
    results = [None] * len(items)
    seen = 0
    for indices, values in gather_object([(mine, out)]):  # one (indices, results) pair per process
        for i, value in zip(indices, values):
            results[i] = value
        seen += len(indices)
    if seen != len(items):
        raise RuntimeError(f"map_split: the processes returned {seen} results for {len(items)} items")
    return results


def mean_over_processes(value: float) -> float:
    """The mean of `value` over all processes (every process gets it); `value` itself with one process."""
    if PartialState().num_processes == 1:
        return value
    values = gather_object([value])
    return sum(values) / len(values)


def per_device_batch_size(batch_size: int, num_processes: int) -> int:
    """A recipe's `batch_size` is the global batch (rows per optimizer step over all processes): each of
    the `num_processes` processes takes `batch_size // num_processes` rows. Raises RecipeError unless it
    divides evenly."""
    if batch_size % num_processes:
        nearest = batch_size - batch_size % num_processes or num_processes
        raise RecipeError(f"batch_size {batch_size} is the global batch and must be divisible by the number of "
                          f"processes ({num_processes}), e.g. {nearest}")
    return batch_size // num_processes


def uses_fsdp() -> bool:
    """Whether this run was launched with FSDP (`accelerate launch` with distributed_type FSDP)."""
    return parse_flag_from_env("ACCELERATE_USE_FSDP")


def process_state() -> PartialState:
    """This process's PartialState, for the loop.

    `accelerate launch --multi_gpu --num_processes N` (or recipes/accelerate/*.yaml) on a machine without
    a GPU starts N processes that accelerate would leave unconnected (each one training alone): they are
    connected over gloo on the CPU instead, as with `ACCELERATE_USE_CPU=true` (which the Trainer reads
    too). FSDP is supported in version 2 (recipes/accelerate/fsdp.yaml); on the CPU only version 2 is
    (`fsdp_on_cpu`), and version 1 is refused with a message."""
    if (uses_fsdp() and not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
            and os.environ.get("FSDP_VERSION", "1") != "2"):
        raise RecipeError(
            "FSDP on the CPU needs fsdp_version: 2 (recipes/accelerate/fsdp.yaml); see README.md, 'Several "
            "processes, GPUs or nodes'.")
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    if state.distributed_type == DistributedType.NO and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        os.environ["ACCELERATE_USE_CPU"] = "true"
        PartialState._reset_state()  # not connected yet: nothing to tear down
        state = PartialState(cpu=True)
    return state


def fsdp_on_cpu(accelerator) -> bool:
    """Turns FSDP back on for a freshly made `accelerator` of a run launched with FSDP on CPU processes.

    Accelerate keeps its FSDP plugin for accelerator devices only: on the CPU it leaves the processes
    MULTI_CPU, and the model would be wrapped in DDP. torch's `fully_shard` (FSDP2) works over gloo on
    the CPU, so the plugin (read from the FSDP_* variables `accelerate launch` sets) is put back and the
    distributed type set to FSDP, in PartialState's shared state too (an AcceleratorState made later
    copies it from there). Returns whether it did; nothing changes without FSDP or off the CPU."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    state = accelerator.state
    if not uses_fsdp() or state.distributed_type != DistributedType.MULTI_CPU:
        return False
    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise RecipeError("FSDP on the CPU needs fsdp_version: 2 (recipes/accelerate/fsdp.yaml)")
    state.fsdp_plugin = plugin
    for shared in (PartialState._shared_state, AcceleratorState._shared_state):
        shared["distributed_type"] = DistributedType.FSDP
    return True


def unsharded_model(sharded, cls, device):
    """A plain `cls` model (not sharded) with the full weights of `sharded`, a model the Trainer sharded
    with FSDP, on every process and on `device`. A collective: every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state_dict = get_model_state_dict(sharded, options=StateDictOptions(full_state_dict=True))
    with torch.random.fork_rng(devices=[]):  # a new model's initialization must not move the seeded generator
        model = cls(copy.deepcopy(sharded.config))
    model.load_state_dict(state_dict)
    if getattr(sharded, "generation_config", None) is not None:
        model.generation_config = copy.deepcopy(sharded.generation_config)
    return model.to(device).train(sharded.training)
