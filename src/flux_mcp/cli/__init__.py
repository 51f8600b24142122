"""The `flux-mcp` command: serve, demo, doctor, host configs, the sandbox, logging."""
