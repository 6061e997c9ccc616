"""Deployment tests: the compose file, the image, and a real Chroma server."""
