"""The node agent: identity, enrollment, transport, runtime, lifecycle."""
