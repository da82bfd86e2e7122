"""Parley, the real-time layer of a discussion platform. The package is grouped by layer
(docs/ARCHITECTURE.md); `app.main.create_app` is the composition root. Importing `app` loads nothing."""
