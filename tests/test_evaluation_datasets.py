"""Evaluation datasets: POST /api/datasets/ (multipart name, kind, file) validates each kind and format
with line-numbered errors, versions and hashes what it stores, refuses duplicates and oversize files,
leaves nothing behind on a refusal; the built-ins import idempotently; the pages list and upload."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client

from console.audit.models import AuditEvent
from console.evaluation.models import Dataset, DatasetVersion
from tests.api_rows import error_of

pytestmark = pytest.mark.django_db


def upload(api: Any, name: str, kind: str, filename: str, content: str | bytes) -> Any:
    raw = content.encode() if isinstance(content, str) else content
    return api.post("/api/datasets/", {"name": name, "kind": kind, "file": SimpleUploadedFile(filename, raw)},
                    format="multipart")


def stored_files() -> list[Path]:
    root = Path(settings.TAUON_STORAGE) / "datasets"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_a_maintainer_registers_a_text_dataset_hashed_stored_and_audited(bob, maintainer_api):
    text = "The first paragraph.\n\nThe second one, a little longer.\n"
    response = upload(maintainer_api, "prose", "text", "prose.txt", text)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body | {"created_at": None} == {
        "dataset": "prose", "kind": "text", "number": 1, "format": "txt", "file_name": "prose.txt",
        "sha256": hashlib.sha256(text.encode()).hexdigest(), "size": len(text.encode()), "examples": 2,
        "stats": {"characters": len(text), "words": 9}, "created_by": "bob", "created_at": None}
    version = DatasetVersion.objects.get()
    assert version.path.read_text() == text and version.path.parent.parent == Path(settings.TAUON_STORAGE) / "datasets"
    assert version.load() == text
    assert AuditEvent.objects.get(action="dataset.version.create").data["sha256"] == body["sha256"]


def test_a_new_file_under_the_same_name_is_the_next_version_and_an_identical_one_is_refused(maintainer_api):
    before = len(stored_files())
    assert upload(maintainer_api, "prose", "text", "a.txt", "one").status_code == 201
    assert upload(maintainer_api, "prose", "text", "b.txt", "two").json()["number"] == 2
    refused = error_of(upload(maintainer_api, "prose", "text", "c.txt", "two"), 409)
    assert refused["code"] == "duplicate" and "identical to prose v2" in refused["message"]
    wrong = error_of(upload(maintainer_api, "prose", "qa", "d.jsonl", '{"prompt": "p", "answer": "a"}'), 400)
    assert wrong["field"] == "kind" and "is a text dataset" in wrong["message"]
    body = maintainer_api.get("/api/datasets/prose/").json()
    assert [v["number"] for v in body["versions"]] == [2, 1] and body["kind"] == "text"
    assert len(stored_files()) == before + 2


@pytest.mark.parametrize(("kind", "filename", "content", "says"), [
    ("classification", "c.jsonl", '{"text": "ok", "label": "pos"}\n{"text": "no label"}\n\n{"text": "x", "label": 1,\n',
     ["line 2: 'label' is missing", "line 4: not valid JSON"]),
    ("classification", "c.jsonl", '["a list"]\n{"text": "", "label": "x"}\n',
     ["line 1: each line must be a JSON object", "line 2: 'text' must be a non-empty string"]),
    ("classification", "c.csv", "sentence,label\nhello,pos\n", ["line 1: the header needs the columns text and label; "
                                                                "found: sentence, label"]),
    ("classification", "c.csv", 'text,label\nfine,pos\n"",neg\nok,\n', ["line 3: 'text' must be a non-empty string",
                                                                      "line 4: 'label' must be a non-empty string"]),
    ("qa", "q.jsonl", '{"prompt": "2+2?", "answer": ["4", ""]}\n{"answer": "x"}\n',
     ["line 1: 'answer' must be a non-empty string or a list", "line 2: 'prompt' is missing"]),
    ("ner", "n.jsonl", '{"tokens": ["Ann", "ran"], "tags": ["B-PER"]}\n{"tokens": ["Bo"], "tags": ["X-PER"]}\n',
     ["line 1: 2 tokens but 1 tags", "line 2: tag 1 'X-PER' is not O or B-/I-/E-/S-"]),
    ("text", "t.txt", "   \n\n", ["line 1: the file is empty"]),
    ("text", "t.txt", b"good line\nbad \xff byte\n", ["line 2: not UTF-8 text"]),
    ("text", "t.jsonl", "hello", ["a text dataset is a .txt file, not 't.jsonl'"]),
    ("qa", "q.csv", "prompt,answer\n", ["a qa dataset is a .jsonl file"]),
])
def test_bad_files_are_refused_naming_each_problem_and_its_line(maintainer_api, kind, filename, content, says):
    before = stored_files()
    error = error_of(upload(maintainer_api, "bad", kind, filename, content), 400)
    assert error["field"] == "file"
    for part in says:
        assert part in error["message"], error["message"]
    assert not Dataset.objects.exists() and stored_files() == before


def test_a_file_with_many_problems_lists_the_first_ten_and_counts_the_rest(maintainer_api):
    lines = "\n".join('{"text": "x"}' for _ in range(13))
    message = error_of(upload(maintainer_api, "bad", "classification", "c.jsonl", lines), 400)["message"]
    assert message.startswith("The file has 13 problems: line 1: 'label' is missing;")
    assert "line 10:" in message and "line 11:" not in message and message.endswith("(and 3 more).")


def test_each_kind_accepts_its_valid_files_and_summarises_them(maintainer_api):
    jsonl = '{"text": "good", "label": "pos"}\n{"text": "bad", "label": "neg"}\n{"text": "fine", "label": "pos"}\n'
    assert upload(maintainer_api, "sent", "classification", "s.jsonl", jsonl).json()["stats"] == {
        "labels": {"neg": 1, "pos": 2}}
    csv = 'text,label,source\n"good, really",pos,web\nbad,neg,web\n'
    body = upload(maintainer_api, "sent-csv", "classification", "s.csv", csv).json()
    assert (body["examples"], body["format"]) == (2, "csv")
    assert DatasetVersion.objects.get(dataset__name="sent-csv").load()[0] == {"text": "good, really", "label": "pos"}
    qa = '{"prompt": "Capital of France?", "answer": "Paris"}\n{"prompt": "2+2?", "answer": ["4", "four"]}\n'
    assert upload(maintainer_api, "quiz", "qa", "q.jsonl", qa).json()["examples"] == 2
    ner = ('{"tokens": ["Ann", "Lee", "met", "Bo"], "tags": ["B-PER", "I-PER", "O", "B-PER"]}\n'
           '{"tokens": ["in", "Paris"], "tags": ["O", "B-LOC"]}\n')
    assert upload(maintainer_api, "names", "ner", "n.jsonl", ner).json()["stats"] == {
        "tokens": 6, "entity_types": {"LOC": 1, "PER": 2}}


def test_an_oversize_dataset_is_refused_before_it_is_read(maintainer_api, settings):
    settings.TAUON_MAX_DATASET_BYTES = 10
    error = error_of(upload(maintainer_api, "big", "text", "big.txt", "x" * 11), 413)
    assert error["code"] == "too_large" and "at most 10 bytes" in error["message"]
    assert "TAUON_" not in error["message"]  # it speaks to the user, not of settings


def test_users_read_datasets_but_only_maintainers_upload(user_api, anon_api, maintainer_api):
    upload(maintainer_api, "prose", "text", "p.txt", "words")
    assert error_of(upload(user_api, "mine", "text", "m.txt", "words"), 403)
    assert error_of(upload(anon_api, "mine", "text", "m.txt", "words"), 401)
    listed = user_api.get("/api/datasets/?kind=text").json()
    assert listed["count"] == 1 and listed["results"][0]["versions"][0]["examples"] == 1
    assert error_of(user_api.get("/api/datasets/nope/"), 404)["message"] == "No dataset named 'nope'."


def test_an_unknown_kind_names_the_kinds(maintainer_api):
    error = error_of(upload(maintainer_api, "x", "audio", "x.txt", "words"), 400)
    assert error["field"] == "kind" and "text, classification, qa, ner" in error["message"]


def test_the_built_in_datasets_import_once(db):
    call_command("import_datasets")
    call_command("import_datasets")
    text = DatasetVersion.objects.get(dataset__name="plain-english")
    qa = DatasetVersion.objects.get(dataset__name="simple-qa")
    assert text.dataset.builtin and text.dataset.kind == "text" and text.stats["words"] > 1000
    assert qa.dataset.kind == "qa" and qa.examples == 30 and len(qa.load()) == 30


def test_the_datasets_page_lists_and_uploads_showing_line_numbered_errors(bob, charlie):
    client = Client()
    client.force_login(bob)
    bad = client.post("/datasets/", {"name": "quiz", "kind": "qa", "file": SimpleUploadedFile("q.jsonl", b'{"x": 1}\n')})
    assert bad.status_code == 400 and "line 1: &#x27;prompt&#x27; is missing" in bad.content.decode()
    good = client.post("/datasets/", {"name": "quiz", "kind": "qa",
                                      "file": SimpleUploadedFile("q.jsonl", b'{"prompt": "p?", "answer": "a"}\n')})
    assert good.status_code == 302 and good["Location"] == "/datasets/quiz/"
    page = client.get("/datasets/quiz/").content.decode()
    assert 'data-dataset-version="1"' in page and "p?" in page
    reader = Client()
    reader.force_login(charlie)
    listing = reader.get("/datasets/").content.decode()
    assert 'data-dataset="quiz"' in listing and 'id="dataset-form"' not in listing
    assert reader.post("/datasets/", {"name": "x", "kind": "text"}).status_code == 403


def test_a_user_dataset_of_another_kind_under_a_built_in_name_is_left_alone(maintainer_api, capsys):
    upload(maintainer_api, "simple-qa", "text", "mine.txt", "my own words")
    call_command("import_datasets")
    assert "Built-in dataset 'simple-qa' not imported: Dataset 'simple-qa' is a text dataset" in capsys.readouterr().err
    assert Dataset.objects.get(name="simple-qa").versions.count() == 1
    assert Dataset.objects.get(name="plain-english").builtin
