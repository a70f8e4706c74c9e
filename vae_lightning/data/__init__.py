"""Datasets as components: the interface (base.py), the in-memory machinery (in_memory.py) and the
datasets."""
