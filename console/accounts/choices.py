from django.db import models


class Role(models.TextChoices):
    """Roles nest: admin ⊃ maintainer ⊃ user."""

    USER = "user", "User"
    MAINTAINER = "maintainer", "Maintainer"
    ADMIN = "admin", "Admin"


RANK = {Role.USER: 1, Role.MAINTAINER: 2, Role.ADMIN: 3}
