"""The training side (torch): the engine that runs one cell, the assembled model, the context balancers see,
metrics, and timing/memory profiles."""
