"""The fence: every override of python-engineio, python-socketio and uvicorn internals.

Nothing outside this package imports those libraries' private modules or overrides their
private methods; each module names the library version it was read from, and
``tests/unit/test_internals_contract.py`` fails naming the override when the library moves.
"""
