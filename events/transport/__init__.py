"""The transports: Socket.IO handlers and the raw WebSocket endpoint; they only translate."""
