"""MCP Tasks: job tool calls run as tasks the client polls (core), and the protocols' shapes of them."""
