"""The relay core: payload models, error table, the chat pipeline, rooms, resume."""
