"""Everything kept in Redis: conversations, the stream log and its followers, limits, key names."""
