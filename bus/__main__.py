"""Run the sgbus command line as `python -m bus`."""

from bus.cli import main

# Guarded: ingest's own process (bus/ingest_process.py) is started by `spawn`, which imports
# this module again, under another name, in the new process.
if __name__ == "__main__":
    main()
