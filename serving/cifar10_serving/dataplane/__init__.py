"""The data plane: a request's life from admission to the answer, knowing no transport."""
