from .configuration_si import SIConfig
from .modeling_si import SIForCausalLM, SIModel, SIPreTrainedModel

# save_pretrained copies configuration_si.py and modeling_si.py next to the weights and writes
# `auto_map` into config.json, so a checkpoint loads anywhere with `trust_remote_code=True`.
SIConfig.register_for_auto_class()
SIModel.register_for_auto_class("AutoModel")
SIForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["SIConfig", "SIForCausalLM", "SIModel", "SIPreTrainedModel"]
