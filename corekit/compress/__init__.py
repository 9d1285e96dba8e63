"""Compression: compressor plugins act on a trained run and write a new, smaller run.

- :mod:`corekit.compress.base`: the :class:`~corekit.compress.base.Compressor` interface a
  compressor plugin implements, and the :class:`~corekit.compress.base.SourceRun` it reads.
- :mod:`corekit.compress.run`: ``corekit compress``: check, compress, write, measure, report.
- :mod:`corekit.compress.measure`: the before/after figures.
"""
