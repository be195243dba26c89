from .config_scope import register_config_scope
from .flop_handles import register_flop_handles

register_config_scope()
register_flop_handles()

__all__ = ['register_config_scope', 'register_flop_handles']
