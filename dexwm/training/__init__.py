"""Training layer: the Lightning module (losses, optimisation, checkpoint content) and the CLI
(`fit`, used by train.py and, as a function, by data aggregation)."""
