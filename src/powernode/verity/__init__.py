"""verity package."""
