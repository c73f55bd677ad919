"""ratiowatch service: ingest, storage, query, alerts and the HTTP API.

Build an application with :func:`ratiowatch_server.app.create_app`; nothing is configured at import.
"""
