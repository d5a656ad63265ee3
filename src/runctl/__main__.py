"""Allow `python -m runctl`."""

from runctl.cli import main

main()
