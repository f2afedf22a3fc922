"""The executor has a handler for every action type the rule table can emit. (The order of the synchronous-standby
actions is checked on real processes in tests/test_sync_outage.py and tests/test_postgres_standby_names.py, and on
the model in tests/test_simulate.py.)"""

from __future__ import annotations

from fsm import actions as a
from runtime.executor import HANDLERS


def test_every_action_type_has_a_handler() -> None:
    missing = [name for name, kind in a.ACTION_TYPES.items() if kind.adapter and kind not in HANDLERS]
    assert missing == []
    assert all(callable(handler) for handler in HANDLERS.values())
