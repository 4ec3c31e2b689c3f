"""Storage: stream logs, rooms, limits and the node bus, in memory and on Redis."""
