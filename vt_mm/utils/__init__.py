from .config_scope import register_config_scope

register_config_scope()

__all__ = ['register_config_scope']
