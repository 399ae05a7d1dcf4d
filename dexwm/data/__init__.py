"""Data layer: the shard schema, resumable shard jobs, per-sample clip transforms, the webdataset
loader and Lightning data module, dataset statistics, the frozen-feature cache, video I/O and a
synthetic dataset. Imports nothing from the model, training or planning layers.

Importing this package is cheap (no torch, no webdataset): shard-writing worker processes import
only the modules they need.
"""
