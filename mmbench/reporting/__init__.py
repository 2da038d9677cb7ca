"""The reporting side: cell results aggregated into leaderboards, rendered and published (no torch)."""
