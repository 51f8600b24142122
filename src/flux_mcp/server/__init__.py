"""The MCP surface: composition, state, the caller, the tools and their declaration, schemas, delivery, rendering, resources, prompts, roots, the gallery, stdio."""
