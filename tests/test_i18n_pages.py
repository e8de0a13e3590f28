"""Every console page in Simplified Chinese: a test walks them all (logged in as an admin whose stored language is
zh-hans, with fixtures so that each page has content) and fails on visible text that the catalog lists but leaves
untranslated. The language switcher, its memory on the user, Accept-Language, the 404/500 pages and the scripts'
strings are checked here too."""

from __future__ import annotations

import re
import uuid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import translation

from console.core import js_strings
from console.core.scan_js import script_strings
from console.deployments.models import Deployment
from console.evaluation.config import key_of, normalize
from console.evaluation.models import DatasetVersion, EvaluationResult, PromotionGate
from console.jobs.models import Job
from console.playground.models import Session
from console.registry.models import Alias, Model, ModelVersion

pytestmark = pytest.mark.django_db
CATALOG = Path(settings.BASE_DIR) / "console" / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"
# Page routes that are actions (POST only) or not HTML pages: the walk skips them.
NOT_PAGES = {"login", "logout", "key-revoke", "plotly-js", "promote", "rollback", "remove-alias", "version-finetune",
             "version-compress", "job-cancel", "job-rerun", "gate-add", "gate-remove", "shared", "model-delete",
             "cancel", "file-download", "v1-files", "v1-file", "v1-file-content", "v1-batches", "v1-batch",
             "v1-batch-cancel", "predict-dataset", "predictions"}
PAGE_APPS = {"registry", "deployments", "playground", "evaluation", "jobs", "audit", "batches", None}


def untranslated() -> list[str]:
    """The catalog's msgids whose Chinese is missing or the English itself (a fuzzy one counts as missing)."""
    text = CATALOG.read_text(encoding="utf-8")
    out = []
    for block in text.split("\n\n"):
        msgid = re.search(r'^msgid ((?:".*"\n?)+)', block, re.M)
        msgstr = re.search(r'^msgstr ((?:".*"\n?)+)', block, re.M)
        if not msgid or not msgstr:
            continue
        join = lambda m: "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1))).replace('\\"', '"')  # noqa: E731
        english, chinese = join(msgid), join(msgstr)
        if english and (not chinese or chinese == english or "#, fuzzy" in block):
            out.append(english)
    return out


def as_pattern(msgid: str) -> re.Pattern[str]:
    """A msgid as its rendered text could read: placeholders match anything, markup is gone, %% is %."""
    plain = re.sub(r"<[^>]+>", "", msgid).replace("%%", "%")
    parts = re.split(r"%\(\w+\)[sd]|\{\{[^}]*\}\}", plain)
    return re.compile(".+?".join(re.escape(p.strip()) for p in parts))


class VisibleText(HTMLParser):
    """Text nodes a person sees (not scripts, styles or code samples), plus placeholders, titles and labels."""

    SKIP = {"script", "style", "code", "pre", "template"}

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.texts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.depth += 1
        for name, value in attrs:
            if name in ("placeholder", "title", "aria-label") and value:
                self.texts.append(value.strip())

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if not self.depth and data.strip():
            self.texts.append(" ".join(data.split()))


def visible(html: str) -> list[str]:
    parser = VisibleText()
    parser.feed(html)
    return parser.texts


def make_version(model: Model, number: int, **fields: Any) -> ModelVersion:
    return ModelVersion.objects.create(model=model, number=number, status=fields.pop("status", "ready"),
                                       source="upload", storage_key=uuid.uuid4().hex, **fields)


@pytest.fixture
def world(alice: Any, bob: Any) -> dict[str, Any]:
    """A model with versions, an alias, a deployment, a dataset with results and a gate, a job and a playground
    session: every page has rows to show. Names are user data, never words of the UI."""
    model = Model.objects.create(name="qwen-mini", task="text-generation", description="我们的小模型", owner=bob)
    first = make_version(model, 1, format="safetensors", total_size=2048, parameter_count=135_000_000,
                         dtype="float32", has_tokenizer=True, created_by=bob)
    make_version(model, 2, parent=first, created_by=bob)
    Alias.move(model, "production", first, actor=bob)
    deployment = Deployment.create(bob, name="qwen-chat", model=model, alias="production", replicas=1)
    data = DatasetVersion.add("zh-prose", "text", "prose.txt", b"Some plain words.\n\nAnd more of them.", bob)
    config = normalize({})
    for number, perplexity in ((1, 12.5), (2, 49540.62)):
        EvaluationResult.objects.create(version=model.versions.get(number=number), dataset_version=data,
                                        config=config, config_key=key_of(config),
                                        metrics={"perplexity": perplexity, "tokens_per_s": 14.2, "ttft_s": 0.31,
                                                 "peak_memory_bytes": 600_000_000, "size_bytes": 538_000_000})
    PromotionGate.put(model, alias="production", dataset=data.dataset, metric="perplexity", max_regression_pct=2.0,
                      config=config, actor=alice)
    job = Job.objects.create(kind="evaluate", params={"model": model.name, "versions": [1, 2],
                                                      "dataset": "zh-prose"}, created_by=bob)
    session = Session.objects.create(owner=alice, title="周报摘要", deployment=deployment.name, data={"turns": []})
    return {"model": model, "deployment": deployment, "dataset": data.dataset, "job": job, "session": session,
            "user": bob}


def page_urls(world: dict[str, Any]) -> dict[str, str]:
    model, name = world["model"].name, world["deployment"].name
    return {
        "registry:model-list": reverse("registry:model-list"),
        "registry:model-detail": reverse("registry:model-detail", args=[model]),
        "registry:version-detail": reverse("registry:version-detail", args=[model, 1]),
        "deployments:list": reverse("deployments:list"),
        "deployments:detail": reverse("deployments:detail", args=[name]),
        "playground:page": reverse("playground:page"),
        "playground:session": reverse("playground:session", args=[world["session"].pk]),
        "evaluation:dataset-list": reverse("evaluation:dataset-list"),
        "evaluation:dataset-detail": reverse("evaluation:dataset-detail", args=[world["dataset"].name]),
        "evaluation:model": reverse("evaluation:model", args=[model]),
        "jobs:job-list": reverse("jobs:job-list"),
        "jobs:job-detail": reverse("jobs:job-detail", args=[world["job"].pk]),
        "audit:event-list": reverse("audit:event-list"),
        "batches:list": reverse("batches:list"),
        "key-list": reverse("key-list"),
        "user-list": reverse("user-list"),
        "user-detail": reverse("user-detail", args=[world["user"].pk]),
    }


def page_names() -> set[str]:
    """The names of every GET page route of the console's page apps (so a new page cannot escape the walk)."""
    names: set[str] = set()

    def walk(patterns: list[Any], app: str | None) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                if str(p.pattern).startswith(("api/", "admin/", "i18n/")):
                    continue
                walk(p.url_patterns, p.app_name or app)
            elif isinstance(p, URLPattern) and p.name and app in PAGE_APPS and p.name not in NOT_PAGES:
                names.add(f"{app}:{p.name}" if app else p.name)

    walk(get_resolver().url_patterns, None)
    return names - NOT_PAGES - {"healthz", "readyz", "set_language", "v1-models", "v1-model", "v1-chat-completions",
                                "v1-completions", "v1-embeddings", "metrics"}


def zh_client(user: Any) -> Client:
    user.language = "zh-hans"  # the switcher's stored choice; the client sends no cookie and no Accept-Language
    user.save(update_fields=["language"])
    client = Client()
    client.force_login(user)
    return client


def offenders(html: str, patterns: list[tuple[str, re.Pattern[str]]]) -> list[str]:
    found = []
    for text in visible(html):
        for msgid, pattern in patterns:
            if pattern.fullmatch(text):
                found.append(f"{text!r} (msgid {msgid!r})")
    return found


def test_the_walk_covers_every_page_route(world: dict[str, Any]) -> None:
    assert page_names() <= set(page_urls(world)), page_names() - set(page_urls(world))


def test_every_page_in_chinese_shows_no_untranslated_catalog_string(world: dict[str, Any], alice: Any) -> None:
    missing = untranslated()
    patterns = [(m, as_pattern(m)) for m in missing if re.search(r"[A-Za-z]{2}", re.sub(r"%\(\w+\)s", "", m))]
    client = zh_client(alice)
    problems = {}
    for name, url in page_urls(world).items():
        response = client.get(url)
        assert response.status_code == 200, (name, url, response.status_code)
        html = response.content.decode()
        assert '<html lang="zh-hans">' in html, name
        if bad := offenders(html, patterns):
            problems[name] = bad
    not_found = client.get("/models/no-such-model/")
    assert not_found.status_code == 404 and "未找到" in not_found.content.decode()
    if bad := offenders(not_found.content.decode(), patterns):
        problems["404"] = bad
    assert not problems, f"untranslated catalog strings on pages: {problems}"


def test_the_chinese_pages_speak_chinese(world: dict[str, Any], alice: Any) -> None:
    client = zh_client(alice)
    html = client.get(reverse("deployments:detail", args=["qwen-chat"])).content.decode()
    for words in ("模型", "部署", "试验场", "副本", "近期指标", "退出登录", "等待中"):
        assert words in html, words
    assert "English" in html  # the switcher offers the other language, in its own name
    evaluation = client.get(reverse("evaluation:model", args=["qwen-mini"])).content.decode()
    assert "晋升门槛" in evaluation and "困惑度" in evaluation


def test_every_script_string_is_listed_and_translated() -> None:
    assert script_strings() == js_strings.SCRIPT_STRINGS, "run: python -m console.core.scan_js"
    missing = set(untranslated())
    assert not [s for s in js_strings.SCRIPT_STRINGS + js_strings.LOOKED_UP if s in missing]
    with translation.override("zh-hans"):
        catalog = js_strings.catalog()
    assert catalog["Check the marked fields."] == "请检查标出的字段。" and catalog["status:idle"] == "空闲"


def test_accept_language_picks_the_language_of_a_visitor_who_chose_none(bob: Any) -> None:
    login = Client().get(reverse("login"), HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9,en;q=0.5").content.decode()
    assert '<html lang="zh-hans">' in login and "登录 Tauon" in login
    english = Client().get(reverse("login"), HTTP_ACCEPT_LANGUAGE="en-GB").content.decode()
    assert '<html lang="en">' in english and "Log in to Tauon" in english


def test_the_switcher_is_on_every_page_and_remembers_the_choice_on_the_user(world: dict[str, Any], bob: Any) -> None:
    client = Client()
    client.force_login(bob)
    page = client.get(reverse("deployments:list")).content.decode()
    assert 'id="language-switch"' in page and 'action="/i18n/setlang/"' in page and 'value="zh-hans"' in page
    response = client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/deployments/"})
    assert response.status_code == 302 and response["Location"] == "/deployments/"
    bob.refresh_from_db()
    assert bob.language == "zh-hans"
    other_browser = Client()  # no cookie there: the choice follows the user
    other_browser.force_login(bob)
    html = other_browser.get(reverse("deployments:list"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert '<html lang="zh-hans">' in html and "新建部署" in html
    client.post("/i18n/setlang/", {"language": "en", "next": "/"})
    bob.refresh_from_db()
    assert bob.language == "en"


def test_an_unknown_language_is_not_stored(bob: Any) -> None:
    client = Client()
    client.force_login(bob)
    client.post("/i18n/setlang/", {"language": "xx-evil", "next": "/"})
    bob.refresh_from_db()
    assert bob.language == ""


def test_the_500_page_is_the_products_and_needs_no_database(rf: Any) -> None:
    from django.db import connections

    from console.core.views import server_error

    request = rf.get("/models/")
    with translation.override("zh-hans"):
        connections.close_all()
        real_connect = connections["default"].connect
        connections["default"].connect = lambda: (_ for _ in ()).throw(AssertionError("the 500 page used the DB"))
        try:
            response = server_error(request)
        finally:
            connections["default"].connect = real_connect
    html = response.content.decode()
    assert response.status_code == 500 and "我们这边出了问题" in html and "favicon.svg" in html
    assert "Traceback" not in html
    api = server_error(rf.get("/api/models/"))
    assert api.status_code == 500 and api["Content-Type"].startswith("application/json")


def test_the_404_page_is_the_products_even_with_debug_on(bob: Any, settings: Any) -> None:
    settings.DEBUG = True
    client = Client()
    client.force_login(bob)
    response = client.get("/no/such/page/")
    html = response.content.decode()
    assert response.status_code == 404 and 'id="error-404"' in html
    assert "URLconf" not in html and "api/schema" not in html  # Django's debug 404 lists every URL pattern


def test_every_page_links_the_favicon_and_shows_times_with_their_zone(world: dict[str, Any], bob: Any) -> None:
    client = Client()
    client.force_login(bob)
    html = client.get(reverse("evaluation:dataset-detail", args=["zh-prose"])).content.decode()
    assert '<link rel="icon" href="/static/console/favicon.svg" type="image/svg+xml">' in html
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT[\d:.]+\+00:00">\d{4}-\d\d-\d\d \d\d:\d\d UTC</time>', html)
    assert (Path(settings.BASE_DIR) / "console" / "static" / "console" / "favicon.svg").is_file()


def test_api_key_callers_get_english_whatever_their_accept_language(world: dict[str, Any], bob: Any) -> None:
    from tests.conftest import key_client

    api = key_client(bob)
    body = api.get("/api/deployments/qwen-chat/", HTTP_ACCEPT_LANGUAGE="zh-CN").json()
    assert body["status_reason"].startswith("Waiting for a worker")
    refused = api.post("/api/deployments/", {"name": "x", "model": "qwen-mini", "replicas": 0}, format="json",
                       HTTP_ACCEPT_LANGUAGE="zh-CN")
    assert refused.status_code == 400 and re.search(r"[A-Za-z]{4}", refused.json()["error"]["message"])
    browser = Client()  # the console's own pages call the API with the session: the user's language
    browser.force_login(bob)
    bob.language = "zh-hans"
    bob.save(update_fields=["language"])
    assert browser.get("/api/deployments/qwen-chat/").json()["status_reason"].startswith("等待")
