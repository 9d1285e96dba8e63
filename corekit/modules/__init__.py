"""Generic model parts. Each receives its sub-parts ready-built; only
:mod:`corekit.assemble` turns component names into modules."""
