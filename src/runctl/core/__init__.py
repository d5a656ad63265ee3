"""Use-cases: submit, follow, wait, sync, and the rest; no SDK imports here."""
