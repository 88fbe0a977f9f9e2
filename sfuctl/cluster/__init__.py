"""Several `sfuctl serve` nodes sharing rooms through Redis (docs/cluster.md)."""
