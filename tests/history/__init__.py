"""Tests of flux_mcp.history: the contract on both backends, and whose rows are whose."""
