"""Object storage for backups and WAL that leave the host.

``store.py``  a small ``Store`` protocol (put, get → stream, head, list, delete) with two
              implementations: a local directory and the object stores of the maintained
              ``obstore`` library (S3 and S3-compatible servers, GCS, Azure). Credentials come from
              the environment/profile obstore reads (``AWS_ACCESS_KEY_ID`` …), never from a policy.
``codec.py``  zstd compression and AES-256-GCM encryption in framed chunks, streaming in bounded
              memory; the key's id (first 16 hex of its SHA-256) is in every object's header.

Errors (all ``OperationFailed`` but the key problems, which are configuration)::

    StoreError            the store failed an operation (the message names the store and key)
    ├── StoreUnreachable  no connection (wrong endpoint, network down, timeouts)
    ├── StoreRefused      the store answered with an error (quota, too large, access denied)
    └── ObjectMissing     no object under that key
    CodecError            an object cannot be decoded
    ├── CorruptObject     not ours, truncated, a frame fails authentication, bad zstd data
    └── WrongKey          encrypted with another key (both key ids named)
    KeyProblem (ConfigError)  no key, unreadable key file, a key that is not 32 bytes
"""
