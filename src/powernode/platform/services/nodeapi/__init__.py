"""The platform side of the node API (docs/node-api.md): one module per concern.

- :mod:`.identity`: who is calling (the client certificate, checked against
  the node CA and the instance's live identity on its row) and the node API's policy;
- :mod:`.ratelimit`: per-node token buckets in the database (event intake);
- :mod:`.enroll`: bootstrap tokens, enrollment, rotation, revocation;
- :mod:`.heartbeat`: the coalescing heartbeat buffer and its flusher;
- :mod:`.tasks`: the lease queue (enqueue, lease, ack, fail);
- :mod:`.events`: events posted by agents, deduplicated by their id;
- :mod:`.modules`: ``GET /node_api/modules``, the desired set for one instance.

A node's identity is always a :class:`powernode.platform.pki.NodePeer` taken
from its certificate; no function here reads an instance id from a body.
"""
