"""pytest plugins for screener's tests (loaded from ``tests/conftest.py`` or with ``-p``)."""
