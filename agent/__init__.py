"""The endpoint agent: installed alone on every client PC and server.

It imports only the shared `wire` package and its own few dependencies, never `collector` or
`billing`.
"""
