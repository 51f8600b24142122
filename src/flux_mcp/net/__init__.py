"""Outbound HTTP: the shared clients, TLS, the download address guard, idle-connection probes, downloads."""
