"""Video models, created by name."""
from vidjax.models.registry import create_model, list_models

__all__ = ['create_model', 'list_models']
