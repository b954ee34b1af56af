"""Ports (data feed, execution, account state) and their adapters: a replay feed of
stored history and the paper broker; venue adapters live in their own modules."""
