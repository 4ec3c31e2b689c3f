"""``python -m llm_relay_client`` is the ``chat`` command."""

from llm_relay_client.cli import run

run()
