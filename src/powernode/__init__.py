"""powernode: a fleet platform for immutable Linux nodes composed from signed modules."""

__version__ = "0.1.0"
