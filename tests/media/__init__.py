"""Tests of flux_mcp.media: previews, saved files, videos."""
