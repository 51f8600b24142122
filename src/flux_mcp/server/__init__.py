"""The MCP surface: composition, the caller, the tools, schemas, rendering, resources, prompts, gallery."""
