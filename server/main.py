"""The one place that builds the app at import, for ``uvicorn server.main:app``."""

from server.app import create_app
from server.logs import configure_logging
from server.serve import tune_gc
from server.settings import Settings

settings = Settings()
configure_logging(settings.log_level, settings.log_format, secrets=settings.secret_values())
app = create_app(settings)
tune_gc()  # as `python -m server` does
