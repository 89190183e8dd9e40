"""Reporting the task outcomes the agent buffered (docs/node-api.md, "Outcomes in batches").

Every outcome is on disk (spool.py) before it is reported, and leaves the
buffer only once the platform took it or refused it for good: a crash or an
outage in between reports it again, and the platform records it once.
"""

from __future__ import annotations

import logging

from powernode.agent.spool import Outcome, Spool
from powernode.agent.transport import NodeClient, PlatformRefused
from powernode.node import records

log = logging.getLogger(__name__)

OUTCOME_BATCH = 100  # the platform's limit per POST /tasks/outcomes
OUTCOME_ROUNDS = 100  # batches per report: bounded, the rest waits for the next beat
POISON = frozenset({400, 413, 422})  # a request the platform will never take as it is


class OutcomeReporter:
    """Sends the spool's outcomes; one per runtime (it remembers the platform's endpoints)."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.batched = True  # until the platform says it has no batch endpoint
        self.carried = True  # until the platform says its lease takes no outcomes

    def lease(self, client: NodeClient, max_tasks: int) -> list[records.LeasedTask]:
        """Lease up to ``max_tasks``, carrying up to 100 buffered outcomes in the same request.

        The platform records them and leases in one transaction (``POST /tasks/lease``
        with ``outcomes``): a beat that has outcomes to report and slots to fill sends
        one request and costs the platform one commit. They leave the buffer once
        answered. A refusal (an outcome not taken: 404, 409; a platform that predates
        the field: 422) changed nothing there: the outcomes are reported as
        :meth:`report` does, each judged on its own, and the lease is sent plain. A
        lost answer keeps them buffered: sent again later, recorded once.
        """
        batch = self.spool.outcomes(limit=OUTCOME_BATCH) if self.carried else []
        if not batch:
            return client.lease(max_tasks)
        try:
            answer = client.lease_reporting(max_tasks, [_record(o) for o in batch])
        except PlatformRefused as e:
            if e.status in (401, 403):
                raise  # our certificate is the problem: keep them all
            if e.status in (400, 422):
                log.info("the platform's lease does not take these outcomes (%s); "
                         "reporting them on their own from now on", e)  # fmt: skip
                self.carried = False
            else:
                log.warning("platform refused the lease carrying outcomes (%s); "
                            "reporting them on their own", e)  # fmt: skip
            self.report(client)
            return client.lease(max_tasks)
        for result in answer.outcomes:
            self.spool.remove_outcome(result.id)  # all 200 (taken, or already recorded)
        return answer.tasks

    def report(self, client: NodeClient) -> None:
        """Send every buffered outcome; each is removed once the platform took or refused it.

        In batches of up to 100 (``POST /tasks/outcomes``, one transaction on
        the platform); one request per outcome against a platform that does
        not know the batch endpoint yet.
        """
        for _ in range(OUTCOME_ROUNDS):
            batch = self.spool.outcomes(limit=OUTCOME_BATCH)
            if not batch:
                return
            if not self.batched or len(batch) == 1:
                for outcome in batch:
                    self._report_one(client, outcome)
                continue
            items = [_record(o) for o in batch]
            try:
                answers = {a.id: a for a in client.outcomes(items)}
            except PlatformRefused as e:
                if e.status in (404, 405):
                    log.info("the platform has no /tasks/outcomes; reporting one by one")
                    self.batched = False
                elif e.status in POISON:  # one bad outcome must not hold up the rest
                    log.warning("platform refused a batch of outcomes (%s); one by one", e)
                    for outcome in batch:
                        self._report_one(client, outcome)
                else:
                    raise  # 401/403: our certificate is the problem: keep them all
                continue
            removed = 0
            for outcome in batch:
                answer = answers.get(outcome.task_id)
                if answer is None:
                    continue  # not answered: kept, sent again
                if answer.status != 200:
                    log.warning(
                        "platform refused the outcome of task %s (%d): %s",
                        outcome.task_id,
                        answer.status,
                        answer.detail,
                    )
                self.spool.remove_outcome(outcome.task_id)
                removed += 1
            if not removed:
                return

    def _report_one(self, client: NodeClient, outcome: Outcome) -> None:
        try:
            item = _record(outcome)
            if item.outcome == "ack":
                client.ack(item.id, item.result, item.attempt)
            else:
                client.fail(item.id, item.error, item.retryable, item.attempt)
        except PlatformRefused as e:
            if e.status in (401, 403):
                raise  # our certificate is the problem, not this outcome: keep it
            log.warning("platform refused the outcome of task %s: %s", outcome.task_id, e)
        self.spool.remove_outcome(outcome.task_id)


def _record(outcome: Outcome) -> records.Outcome:
    """A buffered outcome as the node API carries it (the request body it was saved as)."""
    body = outcome.body
    attempt, result = body.get("attempt"), body.get("result")
    return records.Outcome(
        id=outcome.task_id,
        outcome="ack" if outcome.verb == "ack" else "fail",
        result=result if isinstance(result, dict) else {},
        error=str(body.get("error", "")),
        retryable=bool(body.get("retryable", False)),
        attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
    )
