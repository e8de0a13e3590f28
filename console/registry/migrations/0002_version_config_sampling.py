"""A version's generation defaults are called `sampling` now, with a deployment's field names."""

from django.db import migrations


def rename(apps, schema_editor):
    ModelVersion = apps.get_model("registry", "ModelVersion")
    for version in ModelVersion.objects.filter(config__has_key="generation"):
        old = dict(version.config.pop("generation") or {})
        if "max_new_tokens" in old:
            old["max_tokens"] = old.pop("max_new_tokens")
        version.config["sampling"] = {**old, **version.config.get("sampling", {})}
        version.save(update_fields=["config"])


class Migration(migrations.Migration):
    dependencies = [("registry", "0001_initial")]
    operations = [migrations.RunPython(rename, migrations.RunPython.noop)]
