"""The torch-free side: what grids, recipes, cell results and leaderboards look like (pydantic models).

Nothing here imports torch, so reading, validating and rendering files stays fast and needs no accelerator
stack (`mmbench schema`, `mmbench leaderboard render`).
"""
