"""Small local servers that speak real wire formats (Slack, PagerDuty, LLM providers), for tests."""
