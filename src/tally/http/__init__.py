"""The HTTP JSON API (an edge): `tally.http.app.create_app`, served by `tally serve`."""
