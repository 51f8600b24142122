"""Tests of flux_mcp.upstream: how the clients read each upstream answer."""
