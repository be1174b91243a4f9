"""The HTTP door: FastAPI routes on uvicorn, in the server's process and event loop."""
