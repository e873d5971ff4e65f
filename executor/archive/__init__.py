"""The SQL archive: every order, fill, event and result of the Redis streams, exact, in a
database that outlives their retention (SQLite by default, PostgreSQL by URL).

``orderstream archive`` reads ``<prefix>:events``, ``<prefix>:completed`` and
``<prefix>:failed`` after its cursors and writes each batch, rows and cursors together, in
one SQL transaction (store.py), so every stream entry is stored exactly once whatever stops
it; then it tells Redis how far it has durably read (the streams' readers hashes), and
retention never trims past that. Pure row-building (rows.py) is apart from the SQL (store.py,
queries.py) and the Redis loop (archiver.py); the commands are
operations/archive_cli.py. The schema is tables.py and its Alembic
migrations (migrations/).
"""
