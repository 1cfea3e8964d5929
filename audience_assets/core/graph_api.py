"""What the whole core knows of Meta's Graph API before talking to it: where it is and how many rows one request
may carry (the configuration validates chunk sizes against it, plans cut chunks by it, the client sends them)."""

DEFAULT_GRAPH_URL = "https://graph.facebook.com"
MAX_ROWS_PER_REQUEST = 10_000  # Meta's limit of rows in one /users or /usersreplace request
