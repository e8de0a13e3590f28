"""The browser console's pages, driven through Django's test client: who may see and change what,
and that each form does its job through the model methods (with history and audit records)."""

from __future__ import annotations

import re
import uuid

import pytest
from django.test import Client
from django.urls import reverse

from console.accounts.models import ApiKey
from console.audit.models import AuditEvent, record
from console.jobs.models import Job
from console.registry.models import Alias, AliasEvent, Model, ModelVersion

pytestmark = pytest.mark.django_db


def login(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def make_version(model: Model, number: int, status: str = "ready", source: str = "upload",  # type: ignore[no-untyped-def]
                 **fields) -> ModelVersion:
    return ModelVersion.objects.create(model=model, number=number, status=status, source=source,
                                       storage_key=uuid.uuid4().hex, **fields)


@pytest.fixture
def chatbot(bob) -> Model:  # type: ignore[no-untyped-def]
    model = Model.objects.create(name="chatbot", task="text-generation", description="A helpful bot", owner=bob)
    make_version(model, 1, format="safetensors", total_size=2048, parameter_count=135_000_000, dtype="float32",
                 has_tokenizer=True, chat_template="{{ messages }}", created_by=bob,
                 files=[{"path": "model.safetensors", "size": 2048, "sha256": "ab" * 32}])
    make_version(model, 2, parent=model.versions.get(number=1), created_by=bob)
    make_version(model, 3, status="failed", status_reason="config.json is missing from the archive")
    return model


def v(model: Model, number: int) -> ModelVersion:
    return model.versions.get(number=number)


def page_urls(model: Model, job: Job) -> dict[str, str]:
    return {
        "models": reverse("registry:model-list"),
        "model": reverse("registry:model-detail", args=[model.name]),
        "version": reverse("registry:version-detail", args=[model.name, 1]),
        "jobs": reverse("jobs:job-list"),
        "job": reverse("jobs:job-detail", args=[job.pk]),
        "audit": reverse("audit:event-list"),
        "keys": reverse("key-list"),
    }


@pytest.fixture
def job(bob) -> Job:  # type: ignore[no-untyped-def]
    return Job.objects.create(kind="import", params={"version": 1}, created_by=bob)


# --- who may see what ------------------------------------------------------------------------------

def test_anonymous_visitors_are_sent_to_the_login_page_from_every_page(chatbot, job):
    for name, url in page_urls(chatbot, job).items():
        response = Client().get(url)
        assert response.status_code == 302, name
        assert response["Location"].startswith(reverse("login") + "?next="), name


def test_every_page_but_the_audit_log_renders_for_a_user(chatbot, job, charlie):
    client = login(charlie)
    for name, url in page_urls(chatbot, job).items():
        response = client.get(url)
        assert response.status_code == (403 if name == "audit" else 200), name


def test_the_audit_page_refuses_a_user_with_a_message_naming_the_role(charlie):
    response = login(charlie).get(reverse("audit:event-list"))
    assert response.status_code == 403
    assert "needs the &#x27;maintainer&#x27; role" in response.content.decode()
    assert "signed in as &#x27;user&#x27;" in response.content.decode()


def test_maintainers_and_admins_see_every_page(chatbot, job, bob, alice):
    for user in (bob, alice):
        client = login(user)
        for name, url in page_urls(chatbot, job).items():
            assert client.get(url).status_code == 200, (user.username, name)


def test_the_nav_shows_the_user_and_role_and_hides_the_audit_link_from_users(charlie, bob):
    user_page = login(charlie).get(reverse("registry:model-list")).content.decode()
    assert "charlie" in user_page and "role-user" in user_page
    assert reverse("audit:event-list") not in user_page
    assert 'id="register-form"' not in user_page
    maintainer_page = login(bob).get(reverse("registry:model-list")).content.decode()
    assert reverse("audit:event-list") in maintainer_page and 'id="register-form"' in maintainer_page


def test_a_user_sees_no_change_forms_on_the_model_page(chatbot, charlie):
    page = login(charlie).get(reverse("registry:model-detail", args=["chatbot"])).content.decode()
    for form_id in ("promote-form", "upload-form", "hub-form"):
        assert f'id="{form_id}"' not in page


# --- log in and out --------------------------------------------------------------------------------

def test_logging_in_with_the_real_form_lands_on_the_models_page(bob):
    client = Client()
    assert "Log in to Tauon" in client.get(reverse("login")).content.decode()
    response = client.post(reverse("login"), {"username": "bob", "password": "bob-Pass-123!"})
    assert response.status_code == 302 and response["Location"] == reverse("registry:model-list")
    assert client.get(reverse("registry:model-list")).status_code == 200


def test_a_wrong_password_shows_an_error_on_the_login_page(bob):
    response = Client().post(reverse("login"), {"username": "bob", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


def test_logging_out_is_a_post_that_ends_the_session(bob):
    client = login(bob)
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("registry:model-list")).status_code == 302


# --- models list and registering ----------------------------------------------------------------

def test_the_models_list_shows_task_latest_version_aliases_and_count(chatbot, charlie, bob):
    Alias.move(chatbot, "production", v(chatbot, 1), bob)
    page = login(charlie).get(reverse("registry:model-list")).content.decode()
    row = page[page.index("chatbot"):]
    assert "Text generation" in row and "v3" in row and "production → v1" in row
    assert re.search(r'class="num">3</td>', row)


def test_registering_a_model_creates_it_owned_by_the_maintainer_and_records_model_create(bob):
    response = login(bob).post(reverse("registry:model-list"),
                               {"name": "support-bot", "task": "text-generation", "description": "Answers tickets"})
    assert response.status_code == 302
    assert response["Location"] == reverse("registry:model-detail", args=["support-bot"])
    model = Model.objects.get(name="support-bot")
    assert model.owner == bob and model.description == "Answers tickets"
    event = AuditEvent.objects.get(action="model.create")
    assert event.actor == bob and event.model_name == "support-bot" and event.target_id == str(model.pk)


def test_registering_a_duplicate_name_shows_the_error_and_creates_nothing(chatbot, bob):
    response = login(bob).post(reverse("registry:model-list"), {"name": "chatbot", "task": "embeddings"})
    assert response.status_code == 400
    assert "A model with this name already exists" in response.content.decode()
    assert Model.objects.count() == 1 and not AuditEvent.objects.filter(action="model.create").exists()


def test_registering_a_name_that_is_not_a_slug_is_refused_with_a_hint(bob):
    response = login(bob).post(reverse("registry:model-list"), {"name": "my model!", "task": "embeddings"})
    assert response.status_code == 400
    assert "Use only letters, digits" in response.content.decode()
    assert not Model.objects.exists()


def test_a_user_cannot_register_a_model(charlie):
    response = login(charlie).post(reverse("registry:model-list"), {"name": "sneaky", "task": "embeddings"})
    assert response.status_code == 403
    assert "Registering a model needs the &#x27;maintainer&#x27; role" in response.content.decode()
    assert not Model.objects.exists()


# --- the model page --------------------------------------------------------------------------------

def test_the_model_page_shows_versions_with_their_fields_and_failure_reason(chatbot, charlie):
    page = login(charlie).get(reverse("registry:model-detail", args=["chatbot"])).content.decode()
    assert "A helpful bot" in page
    assert "135M" in page and "float32" in page and "2.0\xa0KB" in page and "chat template" in page
    assert "status-failed" in page and "config.json is missing from the archive" in page


def test_an_importing_version_shows_its_job_progress_bar(chatbot, bob, job):
    Job.objects.filter(pk=job.pk).update(progress=0.4, progress_message="hashing files")
    make_version(chatbot, 4, status="importing", import_job=job)
    page = login(bob).get(reverse("registry:model-detail", args=["chatbot"])).content.decode()
    assert f'data-job-id="{job.pk}"' in page and "data-reload-on-finish" in page
    assert "width: 40%" in page and "hashing files" in page


def test_the_lineage_tree_nests_versions_under_their_parent_and_names_the_producing_job(chatbot, bob, job):
    make_version(chatbot, 4, parent=v(chatbot, 2), produced_by=job, source="job")
    page = login(bob).get(reverse("registry:model-detail", args=["chatbot"])).content.decode()
    tree = page[page.index('id="lineage"'):page.index('id="history"')]
    # v1 > v2 > v4, with v3 beside v1 at the top level
    assert re.search(r"v1</a>.*?<ul class=\"tree\">.*?v2</a>.*?<ul class=\"tree\">.*?v4</a>", tree, re.S)
    assert f"import job #{job.pk}" in tree
    assert tree.count('<ul class="tree">') == 3


def test_the_upload_and_hub_forms_post_to_the_versions_api(chatbot, bob):
    page = login(bob).get(reverse("registry:model-detail", args=["chatbot"])).content.decode()
    assert page.count('data-upload-url="/api/models/chatbot/versions/"') == 2
    assert 'accept=".zip,.tar.gz,.tgz,.gguf"' in page


# --- promote and roll back ---------------------------------------------------------------------------

def test_promoting_moves_the_alias_with_history_and_audit(chatbot, bob):
    client = login(bob)
    url = reverse("registry:promote", args=["chatbot"])
    response = client.post(url, {"version": 1, "alias": "production", "comment": "first release"})
    assert response.status_code == 302
    client.post(url, {"version": 2, "alias": "production", "comment": "better"})
    assert Alias.objects.get(model=chatbot, name="production").version == v(chatbot, 2)
    page = client.get(reverse("registry:model-detail", args=["chatbot"])).content.decode()
    assert "Alias &#x27;production&#x27; now points to v2 (was v1)." in page
    history = page[page.index('id="history-table"'):]
    assert "better" in history and "first release" in history
    assert list(AuditEvent.objects.filter(action="alias.set").values_list("data__to_version", flat=True)) == [2, 1]


def test_rolling_back_puts_the_alias_on_the_previous_version(chatbot, bob):
    Alias.move(chatbot, "production", v(chatbot, 1), bob)
    Alias.move(chatbot, "production", v(chatbot, 2), bob)
    client = login(bob)
    response = client.post(reverse("registry:rollback", args=["chatbot", "production"]), {"comment": "v2 is slow"})
    assert response.status_code == 302
    assert Alias.objects.get(model=chatbot, name="production").version == v(chatbot, 1)
    latest = AliasEvent.objects.filter(model=chatbot).first()
    assert latest.action == "rollback" and latest.from_version == v(chatbot, 2) and latest.comment == "v2 is slow"
    page = client.get(reverse("registry:model-detail", args=["chatbot"])).content.decode()
    assert "Rolled &#x27;production&#x27; back to v1." in page


def test_rolling_back_an_alias_with_no_previous_version_says_so(chatbot, bob):
    Alias.move(chatbot, "staging", v(chatbot, 1), bob)
    client = login(bob)
    client.post(reverse("registry:rollback", args=["chatbot", "staging"]))
    page = client.get(reverse("registry:model-detail", args=["chatbot"])).content.decode()
    assert "has no previous version to roll back to" in page
    assert Alias.objects.get(model=chatbot, name="staging").version == v(chatbot, 1)


def test_promoting_a_failed_version_is_refused_with_the_reason(chatbot, bob):
    response = login(bob).post(reverse("registry:promote", args=["chatbot"]), {"version": 3, "alias": "production"})
    assert response.status_code == 400
    assert "Version 3 is &#x27;failed&#x27;; only ready versions can be promoted." in response.content.decode()
    assert not Alias.objects.exists() and not AliasEvent.objects.exists()


def test_promoting_to_an_alias_that_is_not_a_slug_is_refused(chatbot, bob):
    response = login(bob).post(reverse("registry:promote", args=["chatbot"]), {"version": 1, "alias": "prod env"})
    assert response.status_code == 400
    assert "An alias is a slug" in response.content.decode()
    assert not Alias.objects.exists()


def test_a_user_cannot_promote_roll_back_or_remove_aliases(chatbot, bob, charlie):
    Alias.move(chatbot, "production", v(chatbot, 1), bob)
    Alias.move(chatbot, "production", v(chatbot, 2), bob)
    client = login(charlie)
    assert client.post(reverse("registry:promote", args=["chatbot"]), {"version": 1, "alias": "production"}).status_code == 403
    assert client.post(reverse("registry:rollback", args=["chatbot", "production"])).status_code == 403
    assert client.post(reverse("registry:remove-alias", args=["chatbot", "production"])).status_code == 403
    assert Alias.objects.get(model=chatbot, name="production").version == v(chatbot, 2)
    assert AliasEvent.objects.count() == 2


def test_removing_an_alias_records_its_deletion(chatbot, bob):
    Alias.move(chatbot, "staging", v(chatbot, 1), bob)
    assert login(bob).post(reverse("registry:remove-alias", args=["chatbot", "staging"])).status_code == 302
    assert not Alias.objects.exists()
    assert AliasEvent.objects.first().action == "delete"
    assert AuditEvent.objects.filter(action="alias.delete", actor=bob).exists()


# --- the version page and its config -----------------------------------------------------------------

def test_the_version_page_shows_files_with_sha256_parent_children_and_aliases(chatbot, bob):
    Alias.move(chatbot, "production", v(chatbot, 1), bob)
    page = login(bob).get(reverse("registry:version-detail", args=["chatbot", 1])).content.decode()
    assert "model.safetensors" in page and "ab" * 32 in page
    assert "chatbot v2" in page  # its child
    assert '<span class="tag alias">production</span>' in page
    child = login(bob).get(reverse("registry:version-detail", args=["chatbot", 2])).content.decode()
    assert "chatbot v1" in child  # its parent


def test_saving_a_valid_config_updates_the_version_and_records_it(chatbot, bob):
    response = login(bob).post(reverse("registry:version-detail", args=["chatbot", 1]),
                               {"config": '{"sampling": {"temperature": 0.2, "max_tokens": 64}}'})
    assert response.status_code == 302
    assert v(chatbot, 1).config == {"sampling": {"temperature": 0.2, "max_tokens": 64}}
    assert AuditEvent.objects.filter(action="version.config", actor=bob).exists()


def test_a_config_that_breaks_the_schema_shows_the_validation_error_and_changes_nothing(chatbot, bob):
    response = login(bob).post(reverse("registry:version-detail", args=["chatbot", 1]),
                               {"config": '{"sampling": {"temperature": 9}}'})
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="config-error"' in page and "config sampling/temperature: 9 is greater than the maximum of 2" in page
    assert v(chatbot, 1).config == {}
    assert not AuditEvent.objects.filter(action="version.config").exists()


def test_a_config_that_is_not_json_shows_where_it_breaks(chatbot, bob):
    response = login(bob).post(reverse("registry:version-detail", args=["chatbot", 1]), {"config": '{"sampling": '})
    assert response.status_code == 400
    assert "This is not valid JSON" in response.content.decode()


def test_a_user_sees_the_config_but_cannot_change_it(chatbot, charlie):
    client = login(charlie)
    page = client.get(reverse("registry:version-detail", args=["chatbot", 1])).content.decode()
    assert 'id="config-form"' not in page
    response = client.post(reverse("registry:version-detail", args=["chatbot", 1]), {"config": "{}"})
    assert response.status_code == 403


def test_an_unknown_version_is_a_404(chatbot, bob):
    assert login(bob).get(reverse("registry:version-detail", args=["chatbot", 99])).status_code == 404


# --- jobs ------------------------------------------------------------------------------------------

def test_the_jobs_page_filters_by_kind_and_status(bob):
    queued = Job.objects.create(kind="import", created_by=bob)
    failed = Job.objects.create(kind="evaluate", status="failed", error="out of memory", created_by=bob)
    client = login(bob)
    rows = lambda html: set(map(int, re.findall(r'data-job-row="(\d+)"', html)))  # noqa: E731
    assert rows(client.get(reverse("jobs:job-list")).content.decode()) == {queued.pk, failed.pk}
    assert rows(client.get(reverse("jobs:job-list"), {"kind": "import"}).content.decode()) == {queued.pk}
    page = client.get(reverse("jobs:job-list"), {"status": "failed"}).content.decode()
    assert rows(page) == {failed.pk} and "out of memory" in page


def test_the_job_page_shows_log_result_and_error(bob):
    job = Job.objects.create(kind="import", created_by=bob, status="succeeded", progress=1.0,
                             log=["2026-01-01T00:00:00Z unpacked 3 files"], result={"files": 3})
    page = login(bob).get(reverse("jobs:job-detail", args=[job.pk])).content.decode()
    assert "unpacked 3 files" in page and "&quot;files&quot;: 3" in page
    assert 'id="cancel-form"' not in page  # finished jobs cannot be cancelled


def test_a_maintainer_cancels_a_queued_job_and_it_is_audited(job, bob):
    client = login(bob)
    assert 'id="cancel-form"' in client.get(reverse("jobs:job-detail", args=[job.pk])).content.decode()
    response = client.post(reverse("jobs:job-cancel", args=[job.pk]))
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert AuditEvent.objects.filter(action="job.cancel", actor=bob, target_id=str(job.pk)).exists()
    client.post(reverse("jobs:job-cancel", args=[job.pk]))
    page = client.get(reverse("jobs:job-detail", args=[job.pk])).content.decode()
    assert "already ended (cancelled)" in page


def test_a_user_cannot_cancel_a_job(job, charlie):
    client = login(charlie)
    assert 'id="cancel-form"' not in client.get(reverse("jobs:job-detail", args=[job.pk])).content.decode()
    assert client.post(reverse("jobs:job-cancel", args=[job.pk])).status_code == 403
    job.refresh_from_db()
    assert job.status == "queued"


# --- audit -----------------------------------------------------------------------------------------

def test_the_audit_page_filters_by_user_model_and_action(chatbot, alice, bob):
    Alias.move(chatbot, "production", v(chatbot, 1), bob, comment="go live")
    record(alice, "model.create", chatbot, model_name="other")
    record(alice, "apikey.create", None)
    client = login(bob)
    count = lambda params: len(re.findall(r"<code>[a-z]+\.[a-z]+</code>", client.get(reverse("audit:event-list"), params).content.decode()))  # noqa: E731
    assert count({}) == 3
    assert count({"user": "alice"}) == 2
    assert count({"model": "chatbot"}) == 1
    assert count({"action": "alias.set"}) == 1
    assert count({"action": "alias"}) == 1  # a prefix matches the whole family
    assert count({"user": "alice", "action": "model.create"}) == 1
    assert count({"user": "bob", "action": "model.create"}) == 0


# --- API keys --------------------------------------------------------------------------------------

def test_creating_a_key_shows_the_raw_key_once(charlie):
    client = login(charlie)
    response = client.post(reverse("key-list"), {"name": "notebook"})
    assert response.status_code == 200
    raw = re.search(r'value="(tau_[^"]+)" id="raw-key"', response.content.decode()).group(1)
    key = ApiKey.authenticate(raw)
    assert key is not None and key.user == charlie and key.name == "notebook"
    assert "only time it is shown" in response.content.decode()
    assert raw not in client.get(reverse("key-list")).content.decode()
    assert AuditEvent.objects.filter(action="apikey.create", actor=charlie).exists()


def test_a_key_with_an_expiry_in_the_past_is_refused(charlie):
    response = login(charlie).post(reverse("key-list"), {"name": "old", "expires_at": "2001-01-01T00:00"})
    assert response.status_code == 400
    assert "The expiry must be in the future." in response.content.decode()
    assert not ApiKey.objects.exists()


def test_revoking_a_key_stops_it_working(charlie):
    key, raw = ApiKey.issue(charlie, "ci")
    client = login(charlie)
    assert client.post(reverse("key-revoke", args=[key.pk])).status_code == 302
    assert ApiKey.authenticate(raw) is None
    assert "revoked" in client.get(reverse("key-list")).content.decode()
    assert AuditEvent.objects.filter(action="apikey.revoke", actor=charlie).exists()


def test_users_see_and_revoke_only_their_own_keys_while_admins_see_all(charlie, bob, alice):
    bobs, bobs_raw = ApiKey.issue(bob, "bobs-key")
    ApiKey.issue(charlie, "charlies-key")
    client = login(charlie)
    page = client.get(reverse("key-list")).content.decode()
    assert "charlies-key" in page and "bobs-key" not in page
    assert client.post(reverse("key-revoke", args=[bobs.pk])).status_code == 404
    assert ApiKey.authenticate(bobs_raw) is not None
    admin = login(alice)
    page = admin.get(reverse("key-list")).content.decode()
    assert "charlies-key" in page and "bobs-key" in page
    assert admin.post(reverse("key-revoke", args=[bobs.pk])).status_code == 302
    assert ApiKey.authenticate(bobs_raw) is None


# --- CSRF ------------------------------------------------------------------------------------------

def test_page_posts_without_a_csrf_token_are_refused(bob):
    client = Client(enforce_csrf_checks=True)
    client.force_login(bob)
    response = client.post(reverse("registry:model-list"), {"name": "no-token", "task": "embeddings"})
    assert response.status_code == 403
    assert "CSRF token" in response.content.decode()
    assert not Model.objects.exists()
    client.get(reverse("registry:model-list"))  # sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    response = client.post(reverse("registry:model-list"),
                           {"name": "with-token", "task": "embeddings", "csrfmiddlewaretoken": token})
    assert response.status_code == 302 and Model.objects.filter(name="with-token").exists()
