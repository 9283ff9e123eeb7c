"""Command line interface (``tokenwave --help``)."""
