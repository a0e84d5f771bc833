"""Read models built from the event log, and how each is rebuilt."""
