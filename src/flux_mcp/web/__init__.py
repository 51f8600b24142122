"""Streamable HTTP: the app, the gate, its routes, the credentials, OAuth, what a refused request is told."""
