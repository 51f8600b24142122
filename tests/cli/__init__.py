"""Tests of flux_mcp.cli: the command, the sandbox, cold start."""
