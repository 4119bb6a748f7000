"""REST API for DSOs (FastAPI): scoped tokens, limits, sites, feeders, flexibility."""
