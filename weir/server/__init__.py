"""The daemon: following the repository, deploying revisions, scheduling, webhooks and the API."""
