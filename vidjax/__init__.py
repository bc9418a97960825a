"""vidjax: efficient video classification in JAX/Flax."""
from vidjax.errors import VidjaxError

__version__ = '0.1.0'
__all__ = ['VidjaxError', '__version__']
