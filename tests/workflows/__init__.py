"""Tests for weir.workflows."""
