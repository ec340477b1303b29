"""sknmf.sequence."""
