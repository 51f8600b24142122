"""Tests of flux_mcp.jobs: submit, attach, wait, poll, callbacks, finish."""
