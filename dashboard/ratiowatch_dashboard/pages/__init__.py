"""One module per page: ``layout(...)`` builds it, ``register(app, data)`` its callbacks."""
