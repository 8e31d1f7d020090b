"""The model repository contract between export (writer) and serving and the stress suite (readers).

`layout`: where versions live (`<root>/<name>/<N>/`), which are complete, staging and atomic
publication. `manifest`: the manifest.json schema, read and checked, and written with its
checksum file. `checksums`: the sha256 of a file. Standard library only, Python 3.7 compatible:
it is imported by the training environment and by the Lite server's environment alike.
"""
