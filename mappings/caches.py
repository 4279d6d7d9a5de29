"""The two caches every schema mapper keeps, so that per event only what the event itself
holds is rendered: the plan of each event type (what the type means, made once from the
catalog), and the rendering of each distinct actor (the same session or key acts in many events;
its rendered objects are shared between documents, which therefore are read-only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from mappings.catalog import EventSpec, spec_for

PLAN_CACHE_SIZE = 4096  # unknown types are cached too, up to this bound
ACTOR_CACHE_SIZE = 4096

P = TypeVar("P")
R = TypeVar("R")


def plan_cache(make: Callable[[EventSpec], P]) -> tuple[dict[str, P], Callable[[str], P]]:
    """(plans, plan_for): the mapper looks a type up in `plans` inline and calls `plan_for`
    on a miss, which makes the plan and keeps it."""
    plans: dict[str, P] = {}

    def plan_for(event_type: str) -> P:
        plan = make(spec_for(event_type))
        if len(plans) < PLAN_CACHE_SIZE:
            plans[event_type] = plan
        return plan

    return plans, plan_for


def by_json(render: Callable[[Any, str], R]) -> Callable[[Any, str], R]:
    """`render(actor, event_id)`, cached by the actor's exact JSON (an actor orjson cannot
    serialize is rendered every time, and its error names the event); the cache starts over
    once it holds `ACTOR_CACHE_SIZE` actors."""
    cache: dict[bytes, R] = {}
    dumps = orjson.dumps

    def cached(actor: Any, event_id: str) -> R:
        try:
            key = dumps(actor)
        except TypeError:
            return render(actor, event_id)
        hit = cache.get(key)
        if hit is None:
            hit = render(actor, event_id)
            if len(cache) >= ACTOR_CACHE_SIZE:
                cache.clear()
            cache[key] = hit
        return hit

    return cached
