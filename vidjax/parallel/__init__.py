"""Device meshes and the placement of global batches and train state."""
