"""Tests for weir.server."""
