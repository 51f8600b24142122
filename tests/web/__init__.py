"""Tests of flux_mcp.web: streamable HTTP, its gate, OAuth, replicas."""
