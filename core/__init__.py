"""labelloop core: store, import/export, active-learning engine, workspace API.

Nothing in this package imports Textual (tests/test_import_hygiene.py checks it).
"""

__version__ = "0.1.0"
