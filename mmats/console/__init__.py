"""The operator console: a local web dashboard and a Telegram bot over a runner's journal.

Both only read the journal (a read-only SQLite connection that follows the sequence
number), except for the operator actions, which go through :mod:`mmats.live.control` like
``mmats live pause`` does and are journaled with the user who pressed them.
"""
