"""Building blocks shared by the codecs, each defined once."""
