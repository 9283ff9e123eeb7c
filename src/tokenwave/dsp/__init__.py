"""Signal processing helpers."""
