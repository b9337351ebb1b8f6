"""labelloop's terminal front end: the CLI entry point and the Textual app.

The CLI imports Textual lazily so that headless commands start fast.
"""
