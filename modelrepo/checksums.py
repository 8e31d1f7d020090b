"""The sha256 the manifest records for a file, computed in chunks, optionally copying the bytes."""
import hashlib
from typing import IO, Optional

CHUNK_BYTES = 1 << 20


def sha256_of(path, copy_to: Optional[IO[bytes]] = None) -> str:
    """Hex sha256 of the file at `path`, read in 1 MiB chunks, each also written to `copy_to` if given.

    Copying while hashing gives a copy whose bytes are exactly the ones hashed. Raises OSError.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
            if copy_to is not None:
                copy_to.write(chunk)
    return digest.hexdigest()
