"""Where events come from: publisher and declarer signing keys, signatures, checks."""
