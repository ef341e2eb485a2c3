"""Tally: per-user cost tracking for paid API and AI calls (domain package, no Firebase imports)."""
