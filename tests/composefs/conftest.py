"""Fixtures for composefs writer tests."""
