"""The running side: grids expanded into cells, the run store, the runner, executors and the worker entry
point."""
