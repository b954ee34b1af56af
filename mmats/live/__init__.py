"""The live side: the runner (one tick per invocation), its SQLite journal, reconciliation."""
