"""Building blocks of the M1 network; each file holds one op or one layer kind."""
