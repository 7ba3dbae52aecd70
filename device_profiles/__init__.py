"""Hardware targets as data files, and their loader."""
