"""Kernel-side tests: the client, widgets and magics against a real server."""
