"""The operator console: server-rendered pages under ``/app`` (see routes.py)."""
