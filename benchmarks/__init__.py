"""sknmf's benchmark suite: time to scikit-learn's NMF error, against scikit-learn.

Run ``python benchmarks/run.py --quick`` (see ``benchmarks/README.md``).
"""
