"""End-to-end tests. A package, so that the shared two-node cluster (a ``scope="package"`` fixture in
conftest.py) stops after the last of them: without this file pytest keeps it up for the whole session."""
