from .configuration_si import SIConfig
from .modeling_si import SIForCausalLM, SIModel, SIPreTrainedModel

__all__ = ["SIConfig", "SIForCausalLM", "SIModel", "SIPreTrainedModel"]
