"""Session affinity for engine replicas: a Ray Serve request router that sends every turn of a session to one replica.

The replica of a session is chosen by rendezvous (highest-random-weight) hashing of the session id against each
live replica's id: every router process computes the same answer without shared state, and adding or losing one of
N replicas moves only the sessions whose best replica changed (about 1/N of them). Ranks given to Ray Serve:
  1. the session's replica;
  2. every other live replica, of which Serve takes the least loaded (its queue-length probes) - used when the
     first is saturated (`max_ongoing_requests`) or gone.
Requests without a session go straight to rank 2 over all replicas (least loaded). A request that names a replica
(`replica=` keyword: abort, force_tokens, status of one running request) goes to that replica while it lives.

    RequestRouterConfig(request_router_class="engine.cluster.router.SessionAffinityRouter")
"""
import hashlib
from collections.abc import Iterable

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica


def affinity_score(session_id: str, replica_id: str) -> int:
    """The rendezvous weight of a replica for a session (larger wins)."""
    digest = hashlib.blake2b(f"{session_id}\x00{replica_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rank_replicas(session_id: str, replica_ids: Iterable[str]) -> list[str]:
    """Replica ids from the session's own replica to its last resort (the order a session moves through)."""
    return sorted(replica_ids, key=lambda r: (affinity_score(session_id, r), r), reverse=True)


def pinned_replica(request: PendingRequest | None) -> str | None:
    """The replica a request names (`replica=` keyword argument), if any."""
    return request.kwargs.get("replica") if request is not None and request.kwargs else None


class SessionAffinityRouter(RequestRouter):
    """Ray Serve request router: session id (handle `.options(session_id=...)`) -> its rendezvous replica."""

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        if pending_request is not None:  # all ranks busy: back off between rounds instead of spinning
            pending_request.routing_context.should_backoff = True
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        pinned = pinned_replica(pending_request)
        if pinned is not None:
            return [[by_id[pinned]]] if pinned in by_id else [candidate_replicas]
        session = pending_request.metadata.session_id if pending_request is not None else ""
        if not session:
            return [candidate_replicas]
        ranked = [by_id[r] for r in rank_replicas(session, by_id)]
        return [ranked[:1], ranked[1:]] if len(ranked) > 1 else [ranked]
