"""Tests of flux_mcp.net: guarded downloads, idle-connection probes."""
