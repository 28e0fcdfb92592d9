"""Vector spaces: which embedder's vectors ``chunks.embedding`` holds, recorded in the database.

    spec.py     SpaceSpec (embedder, name, dim, options): pure, from and to the settings
    store.py    the ``vector_spaces`` table: the active space, the one being built, the first record
    follow.py   SpaceEmbedder: a process's embedder for the database's active space (API, workers)

A process embeds queries and chunks in the ACTIVE space read from the database, whatever its own
settings say: a process configured otherwise logs a warning at start and sets the gauge
``core_embedder_config_mismatch`` (docs/embedders.md). `opsctl index reembed` (opsctl.reembed)
builds a new space and switches to it.
"""
