"""The gallery view (an MCP App): one self-contained HTML file shipped as package data."""

from importlib.resources import files

GALLERY_URI = "ui://flux-mcp/gallery.html"


def gallery_html() -> str:
    return files(__package__).joinpath("gallery.html").read_text(encoding="utf-8")
