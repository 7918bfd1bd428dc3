"""The training loop's library: what train.py builds its one loop from (above the methods, below
train.py and the tools)."""
