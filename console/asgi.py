import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
application = get_asgi_application()

from console.accounts.guard import AnonymousBodyGuard  # noqa: E402 - needs the settings loaded above
from console.registry.uploads import BodySizeLimit  # noqa: E402

application = BodySizeLimit(application)  # 413 before Django spools an oversize body to disk
application = AnonymousBodyGuard(application)  # outermost: 401 for an anonymous large body, before reading it
