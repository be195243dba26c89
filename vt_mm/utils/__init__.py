from .checkpoint import SAFE_CHECKPOINT_GLOBALS, allow_mmengine_checkpoints
from .config_scope import register_config_scope

allow_mmengine_checkpoints()
register_config_scope()

__all__ = ['SAFE_CHECKPOINT_GLOBALS', 'allow_mmengine_checkpoints', 'register_config_scope']
