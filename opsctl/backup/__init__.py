"""Backups and restore drills: physical (pg_basebackup full/incremental + archived WAL, PITR) and
logical (pg_dump) backups in a repository directory that carries its own catalog.

Layout of a repository::

    <repo>/backups/<id>/backup.json     the catalog entry (survives losing the database)
    <repo>/backups/<id>/data/           a physical backup (plain format, with backup_manifest)
    <repo>/backups/<id>/dump.pgdump     a logical backup, with manifest.json (SHA-256 of each file)
    <repo>/wal/                         archived WAL segments (archive_command writes here)

Pure decisions (which backups and WAL to prune, which chain serves a target time) live in
``plan.py``; everything that runs a pg_* tool is an adapter around them.
"""
