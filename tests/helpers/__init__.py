"""Shared test builders (shuffles, frames, trained-like weights, CLI calls, tiers)."""
