"""Storage: stream logs, rooms, limits and the node bus, in memory and on Redis."""

from redis.exceptions import RedisError

from services.storage.rooms import RoomsUnavailable

# What a storage call raises when Redis is down or did not answer within REDIS_TIMEOUT_S
# (asyncio's TimeoutError from a call's own deadline): the request may be tried again.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (RedisError, TimeoutError, RoomsUnavailable)
