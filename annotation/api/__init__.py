"""REST routes of the annotation instrument. Each view validates, calls one service, serializes."""
