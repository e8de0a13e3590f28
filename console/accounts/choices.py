from django.db import models
from django.utils.translation import gettext_lazy as _


class Role(models.TextChoices):
    """Roles nest: admin ⊃ maintainer ⊃ user."""

    USER = "user", _("User")
    MAINTAINER = "maintainer", _("Maintainer")
    ADMIN = "admin", _("Admin")


RANK = {Role.USER: 1, Role.MAINTAINER: 2, Role.ADMIN: 3}
