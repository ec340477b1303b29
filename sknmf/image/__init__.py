"""sknmf.image."""
