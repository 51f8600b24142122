"""flux-mcp driven end to end by real clients: agent frameworks, hosts, both transports."""
