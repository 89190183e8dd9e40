"""Benchmark: the ``exec`` round trip — operator enqueues, the node runs ``true``, outcome recorded.

Run: .venv/bin/python bench/bench_exec.py [--rounds 10] [--heartbeat 30]

The real platform (SQLite, mTLS on 127.0.0.1, in this process) and the real
``powernode-agent service`` process with its normal lease cadence (the seed's
30 s heartbeat; the agent leases on each beat). Each round the operator
registers nothing new: a signed NodeScript ``true`` was registered once, and
each round runs it (``POST /node_instances/{id}/nodescripts/true/run``)
together with an ``agent.noop`` task enqueued at the same moment (the
reference, same cadence, same beat); rounds start at a random phase of the
beat. The round trip is the task's ``finished_at - created_at`` as the
platform recorded them. Prints p50/p95 of both and the ratio exec/noop (what
verifying, confining and running the script adds to a task's round trip).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--heartbeat", type=float, default=30.0)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.agent.agentproc import AgentProcess
    from tests.agent.nodecmds import Operator, enrolled
    from tests.platform.nodeapi.realplatform import real_platform

    from powernode.signing import generate_private_key, public_key_pem
    from powernode.signing.nodescript import parse

    key = generate_private_key()
    rng = random.Random(17)  # noqa: S311 - reproducible phases
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        pub = tmp / "nodescripts.pub"
        pub.write_bytes(public_key_pem(key))
        with real_platform(tmp) as platform:
            node = enrolled(
                tmp, platform, "bench-exec", heartbeat_seconds=args.heartbeat,
                nodescript_keys_file=pub,
            )  # fmt: skip
            op = Operator(platform)
            doc = parse({"name": "true", "version": 1, "script": "true\n"}).signed(key)
            assert op.call("POST", "/nodescripts", json=doc.to_dict()).status_code == 201
            agent = AgentProcess(node.config, tmp / "agent.log")
            exec_s: list[float] = []
            noop_s: list[float] = []
            try:
                time.sleep(2)  # the first beat
                for n in range(args.rounds):
                    time.sleep(rng.uniform(0, args.heartbeat))
                    path = f"/node_instances/{node.instance_id}/nodescripts/true/run"
                    r = op.call("POST", path, json={})
                    exec_id = r.json()["task"]["id"]
                    noop_id = platform.add_task(node.instance_id, "agent.noop")
                    deadline = time.monotonic() + 4 * args.heartbeat + 30
                    while time.monotonic() < deadline:
                        found = platform.tasks()
                        if all(found[t].finished_at for t in (exec_id, noop_id)):
                            break
                        time.sleep(0.05)
                    found = platform.tasks()
                    for tid, into in ((exec_id, exec_s), (noop_id, noop_s)):
                        t = found[tid]
                        assert t.state == "succeeded", (t.state, t.error)
                        assert t.finished_at is not None
                        into.append((t.finished_at - t.created_at).total_seconds())
                    print(f"round {n + 1}: exec {exec_s[-1]:.2f} s, noop {noop_s[-1]:.2f} s")
                assert agent.terminate() == 0
            finally:
                agent.close()
                op.close()
    print(f"rounds: {args.rounds}, heartbeat (lease cadence) {args.heartbeat:g} s")
    for name, values in (("exec `true`", exec_s), ("agent.noop (reference)", noop_s)):
        print(
            f"{name:24s} p50 {pct(values, 0.5):6.2f} s  p95 {pct(values, 0.95):6.2f} s  "
            f"mean {statistics.fmean(values):6.2f} s"
        )
    diffs = [e - n for e, n in zip(exec_s, noop_s, strict=True)]
    print(
        f"ratio exec/noop: p50 {pct(exec_s, 0.5) / pct(noop_s, 0.5):.2f}, "
        f"p95 {pct(exec_s, 0.95) / pct(noop_s, 0.95):.2f}; exec adds p50 "
        f"{pct(diffs, 0.5) * 1000:.0f} ms to the same beat's round trip"
    )


if __name__ == "__main__":
    main()
