"""sknmf.datasets."""
