"""Event codes of an SRCD position (``batch["event"]``): part of the data format.

They sit in the core because both sides of the data contract read them: the task layer writes
them (``cram.tasks.srcd_stream``) and the models read them (``cram.models``, for the static-routing
ablation only); neither may import the other.
"""

from __future__ import annotations

from enum import IntEnum


class Event(IntEnum):
    """Event code of an SRCD position (``batch["event"]``)."""

    NONE = 0  # a signal step
    STORE = 1  # a key-value binding is shown
    QUERY = 2  # a key is shown; the model must answer its value


EVENT_NONE, EVENT_STORE, EVENT_QUERY = int(Event.NONE), int(Event.STORE), int(Event.QUERY)
