"""The web console (an edge): read-only HTML pages of one ledger for a finance or support
team, mounted by the HTTP app under `/console` (`tally.console.pages.console_router`).

Signed in with an API key holding the `read` scope, kept in an HttpOnly cookie; every page
reads what the API's GET routes read and renders it with Jinja2 (autoescaped); htmx, vendored
in `static/`, appends the next page of a statement or of the log.
"""
