"""Regent's functional core: the HA decision as a pure function of an immutable observation.

Nothing in this package does I/O, reads a clock, draws a random number or starts a thread; time arrives as
`Observation.now_s`. A test walks these imports and fails on any such module.
"""

from fsm.actions import ACTION_TYPES, Action
from fsm.decision import Decision, decide
from fsm.observation import InvalidObservation, Observation, Trigger
from fsm.states import State

__all__ = ["ACTION_TYPES", "Action", "Decision", "InvalidObservation", "Observation", "State", "Trigger", "decide"]
