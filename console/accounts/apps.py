from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class AccountsConfig(AppConfig):
    name = "console.accounts"
    label = "accounts"

    def ready(self) -> None:
        from axes.signals import user_locked_out

        from console.accounts.models import ApiKey, User
        from console.accounts.revocation import on_key_changed, on_user_saved
        from console.accounts.throttle import on_locked_out

        post_save.connect(on_user_saved, sender=User, dispatch_uid="apikeys-user-saved")
        post_delete.connect(on_key_changed, sender=User, dispatch_uid="apikeys-user-deleted")
        post_save.connect(on_key_changed, sender=ApiKey, dispatch_uid="apikeys-key-saved")
        post_delete.connect(on_key_changed, sender=ApiKey, dispatch_uid="apikeys-key-deleted")
        user_locked_out.connect(on_locked_out, dispatch_uid="audit-login-locked-out")
