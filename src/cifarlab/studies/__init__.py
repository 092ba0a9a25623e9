"""Studies compose runs: the batch-normalization study, the DessiLBI study, pj2 (each its logic plus figures)."""
