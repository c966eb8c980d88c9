"""One router per noun under /v1 (and the dashboard page at /); each route parses, calls ``engine``
and returns a schema of ``api.schemas``."""
