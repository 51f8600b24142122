"""Tests of flux_mcp.server: the tools, schemas, gallery and stdio as an MCP client sees them."""
