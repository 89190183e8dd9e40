"""Platform services: the one implementation behind the REST API and the CLI.

Each function takes a :class:`~powernode.platform.services.context.Ctx`
(session, actor, clock reading), validates, changes rows, writes an audit row
for every write, and raises a :mod:`powernode.platform.problems` error before
anything is flushed when the input is wrong. The caller commits.
"""
