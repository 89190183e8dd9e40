"""`powernode system …`: the operator's commands, over the platform's REST API.

Command names are the seeds' operation names without ``system_``
(``system_promote_module_version`` → ``promote-module-version``). The platform
is reached at ``--url`` / ``POWERNODE_URL`` with the token in ``--token`` /
``POWERNODE_TOKEN``. Every command takes ``--json`` to print the API's answer.
Only httpx is needed: these files import nothing from ``powernode.platform``.

The group and what its commands share are in ``system_common.py``; importing
the command files registers their commands on it, in this order.
"""

from __future__ import annotations

from powernode.cli.system import catalog, fleet, reports, rollouts
from powernode.cli.system.common import DEFAULT_URL, Remote, app, check_url, user_words

__all__ = ["DEFAULT_URL", "Remote", "app", "check_url", "user_words"]

# Imported for their @app.command registrations.
_COMMANDS = (catalog, fleet, reports, rollouts)
