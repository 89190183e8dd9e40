"""`powernode demo`: seed 004's tutorial end to end on embedded defaults.

The demo plays every role of the tutorial on one machine: the module author
(build, sign, push: ``powernode.toolchain.build`` and ``powernode.publish``),
the CI (the signed build webhook), the operator (``powernode system …`` over
the platform's REST API with an API token) and, as root, the node (the
agent's enrollment and module sync, the union mounted under the demo dir).
The platform runs as ``powernode platform serve`` in a child process on
SQLite, with an OCI layout directory as its registry.

Modules, one job each: :mod:`.steps` (numbered, timed steps and the
:class:`~.steps.Reporter` the command line implements: this package never
prints), :mod:`.server` (the platform process), :mod:`.operator` (the
operator's HTTP calls, each shown as its CLI line), :mod:`.fleet` (the
tutorial's operator actions), :mod:`.publishing` (key pair, build, sign,
push), :mod:`.node` and :mod:`.nodesim` (the node, or a stand-in for its
heartbeat), :mod:`.tutorial` and :mod:`.tutorial_node` (the steps in order).
"""
