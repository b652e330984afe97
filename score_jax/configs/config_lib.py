"""The former single-module home of the configs, kept as an import path for existing callers.

New code imports the package's public face, `from score_jax import configs`; this module only
re-exports the names callers used (`config_lib.validate`, `config_lib.ConfigError`, ...).
"""

from score_jax.configs import ConfigError, base_config, check_task, mesh_shape, save, validate

__all__ = ["ConfigError", "base_config", "check_task", "mesh_shape", "save", "validate"]
