"""``lit-serve``: run the gateway with uvicorn, configured by ``LIT_*`` environment variables.

On SIGTERM the gateway stops accepting connections, lets requests in flight finish and exits within
``LIT_SHUTDOWN_GRACE_S`` (``service/shutdown.py``).
"""

from __future__ import annotations

import sys

from service.app import create_app
from service.logs import configure_logging
from service.settings import Settings
from service.shutdown import serve

STARTUP_FAILURE = 3  # uvicorn's exit status when the app did not start


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_format)
    app = create_app(settings)
    if not serve(app, settings.host, settings.port, settings.shutdown_grace_s):
        sys.exit(STARTUP_FAILURE)


if __name__ == "__main__":
    main()
