"""darwincore."""
