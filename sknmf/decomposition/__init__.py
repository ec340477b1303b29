"""sknmf.decomposition."""
