"""Persistent outputs: the map store, the results table, the output layout, atomic writes and manifests."""
