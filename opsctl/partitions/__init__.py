"""Partition rotation: premake from the clock, move stray default-partition rows, detach, archive,
verify and drop expired partitions (``opsctl partitions``)."""
