"""Allow `python -m runctl`."""

from runctl.entry import main

main()
