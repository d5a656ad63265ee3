"""The terminal dashboard (``runctl top``), built on textual; imported only by that command."""
