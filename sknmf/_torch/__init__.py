"""Pure tensor code: no scikit-learn imports here (see DESIGN.md)."""
