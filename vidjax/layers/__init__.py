"""Building blocks shared by the models (NTHWC video tensors)."""
