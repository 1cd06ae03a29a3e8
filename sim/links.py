"""Fair-shared links: concurrent flows share each link's bandwidth max-min fairly (processor sharing), in SimPy."""
# A flow crosses a few links (a sender's port and a receiver's port) and needs `nbytes` of service. At any
# moment the rates of the active flows are the max-min fair allocation (water-filling): repeatedly, the link
# whose remaining capacity divided by its unfrozen flows is smallest fixes the rate of those flows, which
# then use up that much of every link they cross. Rates change only when a flow starts or ends, so between
# two such events every flow's remaining bytes fall linearly; one timer per change wakes the model at the
# next completion. k equal flows through one link of bandwidth 1/beta therefore all end k m beta after they
# start, which is what TCP flows sharing a NIC do (the classical flow-level model of MPI simulators).
from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable
from typing import Any

import simpy

__all__ = ["FairLinks", "max_min_rates"]

def max_min_rates(flows: dict[int, tuple[Hashable, ...]], capacity: dict[Hashable, float]) -> dict[int, float]:
    """Max-min fair rates (bytes/s) of `flows` (id -> links it crosses) on links of `capacity` (bytes/s).

    Water-filling with a heap of link shares (remaining capacity / unfrozen flows), stale entries skipped.
    """
    if len(flows) == 1:  # the common case: a flow alone on its links gets the slowest one
        (f, links), = flows.items()
        return {f: min(capacity[lk] for lk in links)}
    rates: dict[int, float] = {}
    left: dict[Hashable, float] = {}
    users: dict[Hashable, set[int]] = {}
    for f, links in flows.items():
        for link in links:
            if link not in users:
                users[link], left[link] = set(), capacity[link]
            users[link].add(f)
    version = dict.fromkeys(users, 0)
    order = {link: i for i, link in enumerate(users)}  # a total order for ties, whatever the link keys are
    heap = [(left[lk] / len(us), order[lk], 0, lk) for lk, us in users.items()]
    heapq.heapify(heap)
    while heap:
        share, _, ver, link = heapq.heappop(heap)
        if link not in users or ver != version[link]:
            continue
        share = max(share, 0.0)
        for f in users.pop(link):
            rates[f] = share
            for other in flows[f]:
                us = users.get(other)
                if us is None:
                    continue
                us.discard(f)
                left[other] -= share
                version[other] += 1
                if us:
                    heapq.heappush(heap, (left[other] / len(us), order[other], version[other], other))
                else:
                    del users[other]
    return rates


class FairLinks:
    """The fair-shared links of one SimPy environment; `transfer` returns an event that fires when a flow ends.

    Only the flows connected to a starting or ending flow (through shared links) change rate, so only that
    component is recomputed, once per simulated instant however many flows start or end in it (a zero-delay
    event collects them: no time passes before it, so no byte moves at a stale rate); each flow owns one
    timer at its projected end, replaced when its rate changes.
    """

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.capacity: dict[Hashable, float] = {}
        self._users: dict[Hashable, set[int]] = {}
        self._links: dict[int, tuple[Hashable, ...]] = {}
        self._left: dict[int, float] = {}     # bytes left at time self._since[f]
        self._since: dict[int, float] = {}
        self._rate: dict[int, float] = {}
        self._version: dict[int, int] = {}
        self._done: dict[int, simpy.Event] = {}
        self._next_id = 0
        self._dirty: set[Hashable] = set()
        self._pending = False

    @property
    def active(self) -> int:
        """Flows in progress."""
        return len(self._links)

    def transfer(self, links: tuple[Hashable, ...], bytes_per_s: float, nbytes: float) -> simpy.Event:
        """Start a flow of `nbytes` over `links` (each of `bytes_per_s`, set on first use) now."""
        done = self.env.event()
        if nbytes <= 0:
            done.succeed()
            return done
        f = self._next_id
        self._next_id += 1
        self._links[f], self._left[f], self._since[f] = tuple(links), float(nbytes), self.env.now
        self._rate[f], self._version[f], self._done[f] = 0.0, 0, done
        for link in links:
            self.capacity.setdefault(link, bytes_per_s)
            self._users.setdefault(link, set()).add(f)
        self._touch(links)
        return done

    def _touch(self, links: tuple[Hashable, ...]) -> None:
        """Mark the component of `links` for recomputation at the end of this instant."""
        self._dirty.update(links)
        if not self._pending:
            self._pending = True
            self.env.timeout(0).callbacks.append(self._flush)

    def _flush(self, _ev: simpy.Event) -> None:
        self._pending = False
        links, self._dirty = tuple(self._dirty), set()
        self._recompute(self._component(links))

    def _component(self, links: tuple[Hashable, ...]) -> set[int]:
        """Active flows connected to `links` through shared links."""
        seen: set[int] = set()
        todo = list(links)
        visited = set(todo)
        while todo:
            for g in self._users.get(todo.pop(), ()):
                if g not in seen:
                    seen.add(g)
                    for lk in self._links[g]:
                        if lk not in visited:
                            visited.add(lk)
                            todo.append(lk)
        return seen

    def _recompute(self, comp: set[int]) -> None:
        rates = max_min_rates({g: self._links[g] for g in comp}, self.capacity)
        now = self.env.now
        for g, new in rates.items():
            old = self._rate[g]
            if new == old:
                continue
            self._left[g] -= old * (now - self._since[g])
            self._since[g], self._rate[g] = now, new
            self._version[g] += 1
            if new > 0:
                timer = self.env.timeout(max(self._left[g], 0.0) / new)
                timer.callbacks.append(self._finisher(g, self._version[g]))

    def _finisher(self, f: int, version: int) -> Callable[[Any], None]:
        """The callback of flow f's completion timer, valid only while the flow's rate version is `version`."""
        return lambda _event: self._finish(f, version)

    def _finish(self, f: int, version: int) -> None:
        if self._version.get(f) != version:  # its rate changed since this timer was set: a newer one stands
            return
        links = self._links.pop(f)
        for link in links:
            self._users[link].discard(f)
        for d in (self._left, self._since, self._rate, self._version):
            del d[f]
        self._done.pop(f).succeed()
        self._touch(links)
