"""Video models, created by name."""
from vidjax.models.registry import create_model, get_spec, list_models

__all__ = ['create_model', 'get_spec', 'list_models']
