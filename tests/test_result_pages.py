"""Results as pages and a connected console: each job kind's page shows what it produced (named, linked) with
the raw JSON behind "Details"; model and version pages list the deployments serving them with Deploy and
Open-in-playground; model search and admin delete; controls that would be refused are not offered; admins
manage users in the console; fine-tuning picks enough epochs for a small dataset."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client

from console.accounts.models import ApiKey, User
from console.audit.models import AuditEvent
from console.deployments.models import Deployment
from console.jobs.models import Job
from console.registry.models import Alias, Model
from engine.finetune import FinetuneConfig, majority_baseline
from engine.int8_format import MARKER
from tests.api_rows import make_model, make_version

pytestmark = pytest.mark.django_db


def login(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    return response.content.decode()


def section(html: str, ident: str) -> str:
    start = html.index(f'id="{ident}"')
    return html[start:html.index("</section>", start)]


@pytest.fixture
def chatbot(bob) -> Model:  # type: ignore[no-untyped-def]
    model = make_model("chatbot", owner=bob)
    make_version(model, 1, parameter_count=135_000_000, total_size=538_000_000)
    make_version(model, 2, parent=model.versions.get(number=1))
    return model


# --- job pages ----------------------------------------------------------------------------------------------

def test_a_compress_job_page_compares_parent_and_child_with_ratios_and_links_to_both(chatbot, bob) -> None:
    job = Job.objects.create(kind="compress", created_by=bob, status="succeeded", params={"model": "chatbot", "version": 1},
                             result={"model": "chatbot", "parent": 1, "child": 2, "method": "int8",
                                     "comparison": {"size_bytes": {"parent": 538_000_000, "child": 160_000_000,
                                                                   "ratio": 0.2974},
                                                    "perplexity": {"parent": 10.5, "child": 12.4, "ratio": 1.181}}})
    html = page(login(bob), f"/jobs/{job.pk}/")
    outcome = section(html, "job-outcome")
    assert 'href="/models/chatbot/versions/1/"' in outcome and 'href="/models/chatbot/versions/2/"' in outcome
    table = outcome[outcome.index('id="comparison-table"'):]
    assert "Size on disk" in table and "0.297×" in table and "1.181×" in table
    assert re.search(r'ratio-better">0\.297×', table) and re.search(r'ratio-worse">1\.181×', table)
    details = section(html, "job-details")
    assert "<details" in details and "&quot;comparison&quot;" in details  # raw JSON behind the toggle
    assert "<details class=\"raw\" open" not in details


def test_a_finetune_job_page_links_the_child_and_shows_held_out_figures_against_the_parent_and_baseline(
        chatbot, bob) -> None:
    classifier = make_model("sentiment", task="text-classification", owner=bob)
    make_version(classifier, 1)
    make_version(classifier, 2, parent=classifier.versions.get(number=1))
    job = Job.objects.create(kind="finetune", created_by=bob, status="succeeded",
                             params={"model": "sentiment", "version": 1},
                             series={"train_loss": [[1, 0.7], [2, 0.69]]},
                             result={"model": "sentiment", "version": 2, "parent": {"model": "sentiment", "version": 1},
                                     "dataset": "tickets", "dataset_version": 1, "method": "lora", "steps": 20,
                                     "hyperparameters": {"epochs": 4, "min_steps": 0},
                                     "train_loss": 0.69, "eval_loss_before": 0.7, "eval_loss": 0.69,
                                     "eval_accuracy": 0.5, "baseline": {"label": "positive", "accuracy": 0.5},
                                     "evaluation": {"rows": 4, "child": {"accuracy": 0.5}, "parent": {"accuracy": 0.25}}})
    html = page(login(bob), f"/jobs/{job.pk}/")
    outcome = section(html, "job-outcome")
    assert 'id="child-link"' in outcome and 'href="/models/sentiment/versions/2/"' in outcome
    assert "0.5000" in outcome[outcome.index('id="ft-baseline"'):] and "positive" in outcome
    assert 'id="ft-useless"' in outcome  # no better than always answering "positive": said so
    heldout = outcome[outcome.index('id="heldout-table"'):]
    assert "0.2500" in heldout and "0.5000" in heldout
    assert 'id="job-chart"' in html  # the loss curve


def test_a_useful_fine_tuned_child_gets_no_warning(chatbot, bob) -> None:
    job = Job.objects.create(kind="finetune", created_by=bob, status="succeeded", params={"model": "chatbot"},
                             result={"model": "chatbot", "version": 2, "parent": {"model": "chatbot", "version": 1},
                                     "eval_accuracy": 1.0, "baseline": {"label": "a", "accuracy": 0.5}})
    assert 'id="ft-useless"' not in page(login(bob), f"/jobs/{job.pk}/")


def test_an_evaluate_job_page_shows_its_rows_and_links_the_evaluation_page(chatbot, bob) -> None:
    job = Job.objects.create(kind="evaluate", created_by=bob, status="succeeded", params={"model": "chatbot"},
                             result={"model": "chatbot", "dataset": "prose", "dataset_version": 1,
                                     "metrics": {"1": {"perplexity": 10.54, "tokens_per_s": 41.23},
                                                 "2": {"perplexity": 12.4, "tokens_per_s": 80.0}}})
    outcome = section(page(login(bob), f"/jobs/{job.pk}/"), "job-outcome")
    assert 'href="/models/chatbot/evaluation/"' in outcome
    assert "10.54" in outcome and "41.2" in outcome and 'href="/models/chatbot/versions/2/"' in outcome


def test_an_import_job_names_its_model_and_version_not_an_internal_id(chatbot, bob) -> None:
    version = chatbot.versions.get(number=2)
    job = Job.objects.create(kind="import", created_by=bob, status="succeeded", params={"version": version.pk},
                             result={"version": version.pk, "number": 2, "files": 3, "parameter_count": 135_000_000})
    version.import_job = job
    version.save(update_fields=["import_job"])
    html = page(login(bob), f"/jobs/{job.pk}/")
    assert 'id="imported-version"' in html and ">chatbot v2<" in html and "135M" in html
    listing = page(login(bob), "/jobs/")
    row = listing[listing.index(f'data-job-row="{job.pk}"'):]
    row = row[:row.index("</tr>")]
    assert 'href="/models/chatbot/"' in row and 'href="/models/chatbot/versions/2/"' in row


def test_the_jobs_list_shows_the_model_and_what_each_job_produced(chatbot, bob) -> None:
    job = Job.objects.create(kind="compress", created_by=bob, status="succeeded", params={"model": "chatbot", "version": 1},
                             result={"model": "chatbot", "parent": 1, "child": 2})
    chatbot.versions.filter(number=2).update(produced_by=job)
    listing = page(login(bob), "/jobs/")
    row = listing[listing.index(f'data-job-row="{job.pk}"'):]
    row = row[:row.index("</tr>")]
    assert ">chatbot<" in row and ">chatbot v2<" in row


def test_an_explain_job_page_draws_the_attributions_as_a_heatmap(bob) -> None:
    job = Job.objects.create(kind="explain", created_by=bob, status="succeeded", params={"deployment": "assistant"},
                             result={"method": "feature_ablation", "input_tokens": ["Hello", " world"],
                                     "output_tokens": ["Hi"], "attributions": [[0.8, -0.2]], "output_text": "Hi"})
    html = page(login(bob), f"/jobs/{job.pk}/")
    heatmap = html[html.index('id="explain-heatmap"'):]
    assert "Hello" in heatmap and "0.800" in heatmap and "-0.200" in heatmap
    assert "rgba(220, 60, 60, 1.00)" in heatmap and "rgba(50, 90, 220, 0.25)" in heatmap


def test_a_maintainer_confirms_before_cancelling_a_job(bob) -> None:
    job = Job.objects.create(kind="import", created_by=bob, params={"version": 1})
    html = page(login(bob), f"/jobs/{job.pk}/")
    cancel = html[html.index('id="cancel-form"'):]
    assert "confirm(this.dataset.confirm)" in cancel[:400] and f"Cancel job #{job.pk}?" in cancel[:400]


# --- registry: deployments, deploy, playground, search, delete -----------------------------------------------

def test_version_and_model_pages_list_the_deployments_serving_them(chatbot, bob, charlie) -> None:
    Alias.move(chatbot, "production", chatbot.versions.get(number=2), bob)
    Deployment.create(bob, name="assistant", model=chatbot, alias="production")
    Deployment.create(bob, name="pinned-one", model=chatbot, version=chatbot.versions.get(number=1))
    v2 = section(page(login(charlie), "/models/chatbot/versions/2/"), "deployments")
    assert 'data-deployment="assistant"' in v2 and 'data-deployment="pinned-one"' not in v2
    assert 'href="/playground/?deployment=assistant"' in v2
    assert 'id="deploy-link"' not in v2  # users do not deploy
    v1 = section(page(login(bob), "/models/chatbot/versions/1/"), "deployments")
    assert 'data-deployment="pinned-one"' in v1 and "pinned to v1" in v1
    assert 'href="/deployments/?model=chatbot&amp;version=1"' in v1  # Deploy this version, prefilled
    model = section(page(login(bob), "/models/chatbot/"), "deployments")
    assert 'data-deployment="assistant"' in model and 'data-deployment="pinned-one"' in model
    assert "→ v2" in model


def test_the_model_list_searches_names_and_descriptions(bob, charlie) -> None:
    make_model("support-bot", owner=bob, description="Answers tickets")
    make_model("sorter", task="text-classification", owner=bob, description="Routes mail")
    html = page(login(charlie), "/?q=tickets")
    assert 'data-model="support-bot"' in html and 'data-model="sorter"' not in html
    html = page(login(charlie), "/?task=text-classification")
    assert 'data-model="sorter"' in html and 'data-model="support-bot"' not in html
    assert "No model matches this search." in page(login(charlie), "/?q=nothing-like-it")


def test_an_admin_deletes_a_model_but_not_one_a_deployment_uses(chatbot, alice, bob) -> None:
    deployment = Deployment.create(bob, name="pinned-one", model=chatbot, version=chatbot.versions.get(number=1))
    client = login(alice)
    html = page(client, "/models/chatbot/")
    assert 'id="delete-refusal"' in html and "pinned-one" in section(html, "delete-model")
    response = client.post("/models/chatbot/delete/", follow=True)
    assert Model.objects.filter(name="chatbot").exists()
    assert "Not deleted" in response.content.decode() and "pinned-one" in response.content.decode()
    deployment.remove(bob)
    assert 'id="delete-model-form"' in page(client, "/models/chatbot/")
    response = client.post("/models/chatbot/delete/", follow=True)
    assert not Model.objects.filter(name="chatbot").exists()
    assert "Deleted model &#x27;chatbot&#x27;" in response.content.decode()
    assert AuditEvent.objects.filter(action="model.delete", actor=alice).exists()


def test_only_admins_delete_models(chatbot, bob) -> None:
    assert 'id="delete-model"' not in page(login(bob), "/models/chatbot/")
    assert login(bob).post("/models/chatbot/delete/").status_code == 403
    assert Model.objects.filter(name="chatbot").exists()


def test_roll_back_is_offered_only_when_there_is_a_version_to_return_to_and_is_confirmed(chatbot, bob) -> None:
    Alias.move(chatbot, "production", chatbot.versions.get(number=1), bob)
    aliases = section(page(login(bob), "/models/chatbot/"), "aliases")
    assert "data-rollback" not in aliases  # one move: nothing before it
    Alias.move(chatbot, "production", chatbot.versions.get(number=2), bob)
    aliases = section(page(login(bob), "/models/chatbot/"), "aliases")
    assert 'data-rollback="production"' in aliases and "Roll back to v1" in aliases
    assert "Roll 'production' back from v2 to v1?" in aliases


def test_an_int8_child_offers_no_training_or_compression_and_says_why(bob) -> None:
    model = make_model("tiny", owner=bob)
    child = make_version(model, 1)
    child.path.mkdir(parents=True, exist_ok=True)
    (child.path / MARKER).write_text(json.dumps({"mode": "int8"}))
    html = page(login(bob), "/models/tiny/versions/1/")
    assert 'id="finetune-form"' not in html and 'id="compress-form"' not in html
    assert "cannot be trained" in section(html, "finetune-unavailable")
    assert "already stored as" in section(html, "compress-unavailable")


# --- users ----------------------------------------------------------------------------------------------------

def test_admins_see_users_in_the_nav_and_others_cannot_open_the_page(alice, bob, charlie) -> None:
    assert 'id="nav-users"' in page(login(alice), "/")
    for user in (bob, charlie):
        assert 'id="nav-users"' not in page(login(user), "/")
        assert login(user).get("/users/").status_code == 403


def test_an_admin_creates_a_user_with_a_role_audited(alice) -> None:
    client = login(alice)
    response = client.post("/users/", {"username": "dora", "role": "maintainer", "password1": "Dora-Pass-9876!",
                                       "password2": "Dora-Pass-9876!"}, follow=True)
    dora = User.objects.get(username="dora")
    assert dora.role == "maintainer" and dora.check_password("Dora-Pass-9876!")
    assert "Created user &#x27;dora&#x27;" in response.content.decode()
    event = AuditEvent.objects.get(action="user.create")
    assert event.actor == alice and event.data["after"] == {"role": "maintainer", "is_active": True}
    weak = client.post("/users/", {"username": "eve", "role": "user", "password1": "x", "password2": "x"})
    assert weak.status_code == 400 and not User.objects.filter(username="eve").exists()


def test_an_admin_demotes_and_deactivates_a_user_and_sees_and_revokes_their_keys(alice, bob) -> None:
    key, _ = ApiKey.issue(bob, "ci", actor=bob)
    client = login(alice)
    html = page(client, f"/users/{bob.pk}/")
    assert f'data-key="{key.pk}"' in section(html, "user-keys")
    client.post(f"/users/{bob.pk}/", {"role": "user", "is_active": ""})
    bob.refresh_from_db()
    assert bob.role == "user" and not bob.is_active
    assert AuditEvent.objects.get(action="user.update").data["before"] == {"role": "maintainer", "is_active": True}
    response = client.post(f"/keys/{key.pk}/revoke/", {"next": f"/users/{bob.pk}/"})
    assert response["Location"] == f"/users/{bob.pk}/"
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_an_admin_cannot_lock_themselves_out(alice) -> None:
    response = login(alice).post(f"/users/{alice.pk}/", {"role": "user", "is_active": "on"})
    assert response.status_code == 400 and "cannot demote or deactivate yourself" in response.content.decode()
    alice.refresh_from_db()
    assert alice.role == "admin"


def test_revoking_a_key_is_confirmed_and_creating_one_says_so(bob) -> None:
    client = login(bob)
    response = client.post("/keys/", {"name": "notebook"})
    html = response.content.decode()
    assert "Created key &#x27;notebook&#x27;" in html and 'id="raw-key"' in html
    revoke = html[html.index('action="/keys/'):]
    assert "Revoke key 'notebook'?" in revoke[:600] and "confirm(this.dataset.confirm)" in revoke[:600]


# --- fine-tuning defaults for small datasets ------------------------------------------------------------------

def test_without_epochs_a_small_dataset_gets_enough_epochs_for_the_minimum_steps() -> None:
    config = FinetuneConfig(task="text-classification", min_steps=100)  # 33 rows, batch 8: 5 steps an epoch
    assert (config.steps_per_epoch(33), config.total_steps(33)) == (5, 100)
    assert FinetuneConfig(task="text-classification", min_steps=100).total_steps(10_000) == 1250  # one epoch
    assert FinetuneConfig(task="text-classification", epochs=4).total_steps(33) == 20  # explicit epochs kept
    assert FinetuneConfig(task="text-classification", max_steps=7, min_steps=100).total_steps(33) == 7


def test_the_majority_class_baseline_is_what_always_answering_the_commonest_label_scores() -> None:
    train = [{"text": "a", "label": "pos"}, {"text": "b", "label": "pos"}, {"text": "c", "label": "neg"}]
    held = [{"text": "d", "label": "pos"}, {"text": "e", "label": "neg"}, {"text": "f", "label": "neg"}]
    assert majority_baseline(train, held) == {"label": "pos", "accuracy": pytest.approx(1 / 3)}
    words = majority_baseline([{"tokens": ["x", "y"], "tags": ["O", "O"]}], [{"tokens": ["z", "w"], "tags": ["O", "B"]}])
    assert words == {"label": "O", "accuracy": 0.5}
    assert majority_baseline(train, []) is None


# --- in Chinese ------------------------------------------------------------------------------------------------

def test_the_pages_of_this_area_speak_chinese_when_asked(chatbot, alice, bob) -> None:
    job = Job.objects.create(kind="compress", created_by=bob, status="succeeded", params={"model": "chatbot", "version": 1},
                             result={"model": "chatbot", "parent": 1, "child": 2, "method": "int8",
                                     "comparison": {"size_bytes": {"parent": 2, "child": 1, "ratio": 0.5}}})
    client = login(alice)
    expected = {"/": "注册模型", "/models/chatbot/": "别名历史", "/models/chatbot/versions/1/": "部署此版本",
                f"/jobs/{job.pk}/": "压缩结果", "/jobs/": "产出", "/keys/": "创建密钥", "/users/": "创建用户",
                "/audit/": "审计日志"}
    for url, phrase in expected.items():
        response = client.get(url, HTTP_ACCEPT_LANGUAGE="zh-Hans")
        assert response.status_code == 200 and phrase in response.content.decode(), url
