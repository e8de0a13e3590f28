"""Unknown paths: JSON in the API's error shape under /api/, the HTML page elsewhere."""

import pytest

pytestmark = pytest.mark.django_db


def test_an_unknown_api_path_answers_json_in_the_error_shape(user_api):
    response = user_api.get("/api/no-such-thing/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert "/api/docs/" in response.json()["error"]["message"]


def test_an_unknown_page_answers_html(client, charlie):
    client.force_login(charlie)
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
