"""The server process: worker processes, memory, the event loop and logging."""
