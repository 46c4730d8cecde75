"""Run the sgbus command line as `python -m bus`."""

from bus.cli import main

main()
