"""Per-instance resets that run in a forked child.

gunicorn imports the app in its master process and then forks the workers (always with
``--preload``, and for anything a config or app factory builds early). Each worker starts
with a copy of every object built before the fork, frozen mid-flight:

* a lock that another thread held at that moment stays held forever in the child (the
  thread that would release it does not exist there), so the first use deadlocks;
* the parent's sockets (pooled HTTP connections, Redis clients) would be shared by two
  processes whose requests and replies interleave on the same connection;
* per-process state (an in-memory cache, rate-limit windows, queued waiters) describes
  the parent, not the new worker.

An object holding such state registers one of its own methods with
:func:`reset_in_child` when it is built; a single ``os.register_at_fork`` hook calls every
live one in the child right after the fork, while the child still has a single thread.
A reset only rebuilds: it drops (never closes) what belongs to the parent. Only a weak
reference to the instance is kept (with the method's function), so registering never
keeps an instance alive, and a collected instance's entry removes itself. Not
:class:`weakref.WeakMethod`: its internal callback raises ``AttributeError`` when the
interpreter frees it at exit before its instance ("Exception ignored in … _cb").
Where ``os.register_at_fork`` is missing (Windows) there is no fork to guard against.
"""

from __future__ import annotations

import itertools
import os
import types
import weakref
from collections.abc import Callable

__all__ = ["reset_in_child"]

#: Live resets by registration number, in registration order. An entry is removed by its
#: weak reference's callback as soon as its instance is collected.
_RESETS: dict[int, tuple[weakref.ref[object], Callable[[object], None]]] = {}
_NUMBERS = itertools.count()


def reset_in_child(method: Callable[[], None]) -> None:
    """Call the bound ``method`` in every child forked from now on, while its object lives.

    Raises :class:`TypeError` for anything but a bound method: a plain function or lambda
    cannot be held weakly on behalf of an instance.
    """
    if not isinstance(method, types.MethodType):
        raise TypeError(f"reset_in_child takes a bound method, not {type(method).__name__}")
    instance, function = method.__self__, method.__func__
    number = next(_NUMBERS)
    _RESETS[number] = (weakref.ref(instance, lambda _ref: _RESETS.pop(number, None)), function)


def _after_fork_in_child() -> None:
    # Runs in the child right after fork, with a single thread. dict.copy() runs in C
    # without calling back into Python, so a collection that removes an entry cannot
    # change the dict mid-iteration.
    for ref, function in _RESETS.copy().values():
        instance = ref()
        if instance is not None:
            function(instance)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
