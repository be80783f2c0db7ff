"""The store stage: the single writer of the DuckDB file and the reads around it.

- `schema`: the tables as ordered migrations; start-up checks and upgrades (`open_checked`)
- `files`: opening the file, and what is wrong with it (`DatabaseFileError`)
- `batch`, `writer`: the rows of one write, and the single writer's idempotent inserts
- `reader`: `read_db`, through the store when it runs (`readserver`), else the file read-only
- `sink`: the store's loop over the transport; `retention`: old rows out
"""
