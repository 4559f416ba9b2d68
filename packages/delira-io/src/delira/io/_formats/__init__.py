"""One module per file format, each with ``read(path) -> Image`` and (if writable) ``write(path, image)``.

Readers import their library through :func:`delira.io._optional.require`, so a missing optional
dependency names the extra to install. :mod:`delira.io.images` picks the module by file name.
"""
