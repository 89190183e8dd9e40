"""The operator REST API under ``/api/v1/system`` (routers by resource)."""
