"""si-hf: self-improving transformers on the Hugging Face stack."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .config import Recipe, parse_recipe
from .errors import HubError, RecipeError, RoundError
from .modeling import SIConfig, SIForCausalLM, SIModel
from .tasks import Task, get_task, register_task
from .tokenization import build_tokenizer

AutoConfig.register(SIConfig.model_type, SIConfig, exist_ok=True)
AutoModel.register(SIConfig, SIModel, exist_ok=True)
AutoModelForCausalLM.register(SIConfig, SIForCausalLM, exist_ok=True)

__version__ = "0.1.0"
__all__ = [
    "HubError",
    "Recipe",
    "RecipeError",
    "RoundError",
    "SIConfig",
    "SIForCausalLM",
    "SIModel",
    "Task",
    "build_tokenizer",
    "get_task",
    "parse_recipe",
    "register_task",
]
