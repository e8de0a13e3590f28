"""The Batch API in process: uploads refused whole when they are not JSONL or over a cap, lines
validated one by one into the error file, ownership, cancel before the job ran, the page."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client, override_settings

from console.audit.models import AuditEvent
from console.batches.choices import BatchStatus
from console.batches.models import Batch, BatchFile
from tests.serving_rows import deploy

pytestmark = pytest.mark.django_db


def api(user) -> Client:  # type: ignore[no-untyped-def]
    from console.accounts.models import ApiKey

    return Client(headers={"Authorization": f"Bearer {ApiKey.issue(user, name='batch')[1]}"})


def jsonl(*rows: Any) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def chat_line(custom_id: str, model: str = "chat", **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, **body}}


def upload(client: Client, content: bytes, purpose: str = "batch", name: str = "in.jsonl"):  # type: ignore[no-untyped-def]
    from django.core.files.uploadedfile import SimpleUploadedFile

    return client.post("/v1/files", {"file": SimpleUploadedFile(name, content), "purpose": purpose})


def test_a_jsonl_file_is_uploaded_listed_read_and_deleted(charlie):
    client = api(charlie)
    content = jsonl(chat_line("a"), chat_line("b"))
    made = upload(client, content)
    assert made.status_code == 200, made.content
    body = made.json()
    assert body["object"] == "file" and body["purpose"] == "batch" and body["bytes"] == len(content)
    assert body["id"].startswith("file-") and body["filename"] == "in.jsonl"
    assert client.get("/v1/files").json()["data"][0]["id"] == body["id"]
    assert client.get(f"/v1/files/{body['id']}").json() == body
    assert b"".join(client.get(f"/v1/files/{body['id']}/content").streaming_content) == content
    assert AuditEvent.objects.filter(action="batch_file.upload", target_id=body["id"]).exists()
    gone = client.delete(f"/v1/files/{body['id']}")
    assert gone.json() == {"id": body["id"], "object": "file", "deleted": True}
    assert client.get(f"/v1/files/{body['id']}").status_code == 404
    assert not BatchFile.objects.exists()


@pytest.mark.parametrize("content, code", [
    (b"this is not json\n", "invalid_jsonl"),
    (b'[1, 2]\n', "invalid_jsonl"),
    (jsonl({"method": "POST", "url": "/v1/chat/completions", "body": {}}), "invalid_custom_id"),
    (jsonl(chat_line("a"), chat_line("a")), "duplicate_custom_id"),
    (b"\n\n", "empty_file"),
])
def test_a_file_that_is_not_batch_jsonl_is_refused_whole_and_nothing_is_kept(charlie, content, code):
    response = upload(api(charlie), content)
    assert response.status_code == 400 and response.json()["error"]["code"] == code, response.content
    assert "line" in response.json()["error"]["message"].lower() or code == "empty_file"
    assert not BatchFile.objects.exists() and not list(BatchFile().path.parent.glob("*.part"))


def test_a_file_over_the_caps_or_of_another_purpose_is_refused(charlie):
    client = api(charlie)
    with override_settings(TAUON_BATCH_MAX_FILE_BYTES=100):
        big = upload(client, jsonl(chat_line("a"), chat_line("b")))
    assert big.status_code == 413 and big.json()["error"]["code"] == "file_too_large"
    with override_settings(TAUON_BATCH_MAX_LINES=2):
        many = upload(client, jsonl(chat_line("a"), chat_line("b"), chat_line("c")))
    assert many.status_code == 400 and many.json()["error"]["code"] == "too_many_lines"
    wrong = upload(client, jsonl(chat_line("a")), purpose="fine-tune")
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "purpose"
    assert not BatchFile.objects.exists()


def create(client: Client, file_id: str, **extra: Any):  # type: ignore[no-untyped-def]
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h", **extra}
    return client.post("/v1/batches", body, content_type="application/json")


def test_a_batch_request_is_checked_before_anything_is_made(charlie, bob):
    client = api(charlie)
    file_id = upload(client, jsonl(chat_line("a"))).json()["id"]
    assert create(client, file_id, endpoint="/v1/images").json()["error"]["param"] == "endpoint"
    assert create(client, file_id, completion_window="1h").json()["error"]["param"] == "completion_window"
    assert create(client, "file-nope").status_code == 404
    bobs = upload(api(bob), jsonl(chat_line("a"))).json()["id"]
    assert create(client, bobs).status_code == 404  # not charlie's file
    assert not Batch.objects.exists()
    with override_settings(TAUON_BATCH_MAX_ACTIVE_PER_USER=1):
        assert create(client, file_id).status_code == 200
        refused = create(client, file_id)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_batches"


def test_each_bad_line_goes_to_the_error_file_with_what_is_wrong(charlie, bob, llama_dir):
    deploy("chat", llama_dir, owner=bob, wait=False)
    deploy("embed", llama_dir, owner=bob, task="embeddings", wait=False)
    lines = [
        chat_line("good"),
        {**chat_line("bad-url"), "url": "/v1/images/generations"},
        {**chat_line("other-url"), "url": "/v1/completions"},
        {**chat_line("get"), "method": "GET"},
        chat_line("no-model", model="nope"),
        chat_line("wrong-task", model="embed"),
        chat_line("hot", temperature=5),
        chat_line("streamed", stream=True),
        {"custom_id": "no-body", "method": "POST", "url": "/v1/chat/completions"},
        chat_line("huge", max_tokens=10**6),
    ]
    client = api(charlie)
    made = create(client, upload(client, jsonl(*lines)).json()["id"])
    assert made.status_code == 200 and made.json()["status"] == "validating"
    batch = Batch.objects.get()
    batch.validate()
    assert batch.status == BatchStatus.IN_PROGRESS and batch.counts() == {"total": 10, "completed": 0, "failed": 9}
    batch.lines.filter(custom_id="good").delete()  # (no worker here: finish with the bad lines alone)
    batch.total = 9
    batch.save()
    assert batch.finish(BatchStatus.COMPLETED) and batch.status == BatchStatus.COMPLETED
    assert not batch.output_file_id
    errors = [json.loads(line) for line in BatchFile.objects.get(pk=batch.error_file_id).path.read_text().splitlines()]
    codes = {e["custom_id"]: e["error"]["code"] for e in errors}
    assert codes == {"bad-url": "invalid_url", "other-url": "mismatched_url", "get": "invalid_value",
                     "no-model": "model_not_found", "wrong-task": "wrong_task", "hot": "invalid_value",
                     "streamed": "unsupported_parameter", "no-body": "invalid_type", "huge": "invalid_value"}
    assert all(e["response"] is None and e["id"].startswith("batch_req_") and e["error"]["message"] for e in errors)
    assert "temperature" in next(e for e in errors if e["custom_id"] == "hot")["error"]["message"]
    retrieved = client.get(f"/v1/batches/{batch.id}").json()
    assert retrieved["status"] == "completed" and retrieved["error_file_id"] == batch.error_file_id
    assert retrieved["request_counts"] == {"total": 9, "completed": 0, "failed": 9}
    assert retrieved["completed_at"] >= retrieved["finalizing_at"] >= retrieved["in_progress_at"]


def test_users_see_their_own_batches_and_files_and_admins_see_all(charlie, bob, alice):
    client = api(charlie)
    file_id = upload(client, jsonl(chat_line("a"))).json()["id"]
    batch_id = create(client, file_id).json()["id"]
    other = api(bob)
    assert other.get(f"/v1/batches/{batch_id}").status_code == 404
    assert other.get(f"/v1/files/{file_id}").status_code == 404
    assert other.get(f"/v1/files/{file_id}/content").status_code == 404
    assert other.post(f"/v1/batches/{batch_id}/cancel").status_code == 404
    assert other.delete(f"/v1/files/{file_id}").status_code == 404
    assert other.get("/v1/batches").json()["data"] == [] and other.get("/v1/files").json()["data"] == []
    admin = api(alice)
    assert admin.get(f"/v1/batches/{batch_id}").status_code == 200
    assert [b["id"] for b in admin.get("/v1/batches").json()["data"]] == [batch_id]
    assert Client().get("/v1/batches").status_code == 401


def test_a_batch_cancelled_before_its_job_ran_is_cancelled_at_once_and_its_file_then_deletable(charlie):
    client = api(charlie)
    file_id = upload(client, jsonl(chat_line("a"))).json()["id"]
    batch_id = create(client, file_id).json()["id"]
    busy = client.delete(f"/v1/files/{file_id}")
    assert busy.status_code == 400 and busy.json()["error"]["code"] == "file_in_use"
    cancelled = client.post(f"/v1/batches/{batch_id}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["cancelling_at"] and cancelled["cancelled_at"]
    assert Batch.objects.get().job.status == "cancelled"
    again = client.post(f"/v1/batches/{batch_id}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "batch_not_cancellable"
    assert AuditEvent.objects.filter(action="batch.cancel", target_id=batch_id).count() == 1
    assert client.delete(f"/v1/files/{file_id}").status_code == 200


def test_the_list_pages_with_after_and_limit(charlie):
    client = api(charlie)
    ids = [upload(client, jsonl(chat_line("a")), name=f"{i}.jsonl").json()["id"] for i in range(3)]
    first = client.get("/v1/files?limit=2").json()
    assert [f["id"] for f in first["data"]] == ids[::-1][:2] and first["has_more"]
    rest = client.get(f"/v1/files?limit=2&after={first['last_id']}").json()
    assert [f["id"] for f in rest["data"]] == [ids[0]] and not rest["has_more"]
    assert client.get("/v1/files?limit=0").status_code == 400


def test_the_batches_page_shows_progress_downloads_and_cancel_in_both_languages(charlie, client):
    api_client = api(charlie)
    file_id = upload(api_client, jsonl(chat_line("a"), chat_line("b"))).json()["id"]
    batch_id = create(api_client, file_id).json()["id"]
    client.force_login(charlie)
    page = client.get("/batches/")
    html = page.content.decode()
    assert page.status_code == 200 and batch_id in html and "0 answered · 0 failed · 2 lines" in html
    assert f"/batches/files/{file_id}/" in html and f"/batches/{batch_id}/cancel/" in html
    assert client.get(f"/batches/files/{file_id}/").status_code == 200
    zh = client.get("/batches/", headers={"Accept-Language": "zh-hans"}).content.decode()
    assert "批量任务" in zh and "已回答" in zh
    done = client.post(f"/batches/{batch_id}/cancel/", follow=True)
    assert Batch.objects.get().status == BatchStatus.CANCELLED and batch_id in done.content.decode()
    outsider = Client()
    from tests.conftest import make_user

    outsider.force_login(make_user("erin", "user"))
    assert outsider.get(f"/batches/files/{file_id}/").status_code == 404
    assert outsider.post(f"/batches/{batch_id}/cancel/").status_code == 404


def test_a_batch_past_its_window_expires_with_its_unanswered_lines_in_the_error_file(charlie, bob, llama_dir):
    from datetime import timedelta

    from django.utils import timezone

    from workers.batch import run

    deploy("chat", llama_dir, owner=bob, wait=False)
    client = api(charlie)
    create(client, upload(client, jsonl(chat_line("a"), chat_line("b"))).json()["id"])
    batch = Batch.objects.get()
    Batch.objects.filter(pk=batch.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    result = run(batch.job)  # the job body finds the window closed before it sends anything
    assert result["status"] == "expired" and result["failed"] == 2
    batch.refresh_from_db()
    assert batch.expired_at and not batch.output_file_id
    errors = [json.loads(line) for line in BatchFile.objects.get(pk=batch.error_file_id).path.read_text().splitlines()]
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [("a", "batch_expired"), ("b", "batch_expired")]


def test_a_batch_whose_job_failed_fails_with_the_reason(charlie):
    from console.jobs import kinds

    client = api(charlie)
    create(client, upload(client, jsonl(chat_line("a"))).json()["id"])
    job = Batch.objects.get().job
    job.fail("The worker running this job died 3 times; gave up after 3 deliveries.")
    kinds.on_failed(job)
    failed = client.get(f"/v1/batches/{Batch.objects.get().id}").json()
    assert failed["status"] == "failed" and failed["failed_at"]
    assert failed["errors"]["data"][0]["code"] == "job_failed" and "died" in failed["errors"]["data"][0]["message"]


@pytest.mark.django_db(transaction=True)
def test_on_a_phone_the_batches_table_fits_and_cancel_asks_first(live_server, monkeypatch, charlie):
    from tests.conftest import browser_page, log_in

    client = api(charlie)
    file_id = upload(client, jsonl(chat_line("a"))).json()["id"]
    with override_settings(TAUON_BATCH_QUEUE="nobody-listens"):  # a session's jobs worker must not run it
        batch_id = create(client, file_id).json()["id"]
    with browser_page(live_server.url, monkeypatch, viewport=(390, 800)) as page:
        log_in(page, "charlie")
        page.goto("/batches/")
        table = page.locator("#batch-table")
        assert table.evaluate("t => t.getBoundingClientRect().right") <= 390
        assert table.evaluate("t => t.scrollWidth <= t.clientWidth")
        dialogs: list[str] = []
        page.once("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.click(f"tr[data-batch='{batch_id}'] button.danger")
        assert dialogs and batch_id in dialogs[0]
        assert Batch.objects.get().status == BatchStatus.VALIDATING  # dismissed: nothing happened
        page.once("dialog", lambda d: d.accept())
        page.click(f"tr[data-batch='{batch_id}'] button.danger")
        page.wait_for_selector(".msg-success")
    assert Batch.objects.get().status == BatchStatus.CANCELLED
