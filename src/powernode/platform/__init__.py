"""The platform: powernode's control plane (``powernode platform serve``).

Server-only dependencies (FastAPI, SQLAlchemy, Alembic, psycopg) live in the
``platform`` extra; nothing outside this package and ``cli/platform.py`` /
``cli/system.py`` may import it, so a node installs the agent without them.
"""
