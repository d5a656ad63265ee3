"""Storage: checkpoints and (later) object-store transfers."""
