"""Tests of flux_mcp.domain: arguments, validation, image inputs."""
