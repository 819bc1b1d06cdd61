"""Collaborative transactions: operation types, their confirmation cards, trading backends."""
