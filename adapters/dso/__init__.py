"""DSO limits: the one intake every protocol goes through, and the hash-chained audit log."""
