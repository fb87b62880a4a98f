"""Connectors: the registry and the built-in connectors (http, db, email, slack, pagerduty, llm)."""
