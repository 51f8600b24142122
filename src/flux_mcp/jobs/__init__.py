"""A job's life, free of MCP: submit, attach or resume, wait, poll, be called back, finish."""
