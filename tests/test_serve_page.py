"""The chat page's routes (create_app + TestClient): served without a key, with a strict
Content-Security-Policy, no inline script, the API still behind the key, and shipped as package data.
What the page does in a browser: tests/test_browser_chat_page.py."""

from __future__ import annotations

import fnmatch
import tomllib
from html.parser import HTMLParser
from importlib.resources import files
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import API_KEY

from glmlab.errors import ModelLoadError
from glmlab.serve import ServerSettings, create_app
from glmlab.serve.page import CONTENT_SECURITY_POLICY

REPO = Path(__file__).parent.parent
STATIC = files("glmlab.serve") / "static"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def no_model(model, **options):
    raise ModelLoadError("tiny: not loaded in these tests (the page needs no model).")


@pytest.fixture(scope="module")
def client():
    """A server with an API key whose model never loads: the page does not wait for it."""
    app = create_app(ServerSettings(model="tiny", api_key=API_KEY), loader=no_model)
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as test_client:
        yield test_client


class PageParts(HTMLParser):
    """The scripts, stylesheets and inline code an HTML page holds."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.stylesheets: list[str] = []
        self.inline: list[str] = []  # <script> bodies, <style>, on*= handlers, style= attributes
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            self.scripts.append(values.get("src") or "")
            self._in_script = True
        if tag == "style":
            self.inline.append("<style>")
        if tag == "link" and values.get("rel") == "stylesheet":
            self.stylesheets.append(values["href"] or "")
        self.inline += [f"{tag} {name}=" for name, _ in attrs if name.startswith("on") or name == "style"]

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(f"<script>{data.strip()[:40]}")


def test_the_page_is_served_without_a_key_under_a_policy_that_forbids_inline_script(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    policy = dict((directive.split(" ", 1) + [""])[:2] for directive in CONTENT_SECURITY_POLICY.split("; "))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == policy["style-src"] == policy["connect-src"] == "'self'"
    assert policy["img-src"] == "'self' data: blob:"
    assert response.headers["x-content-type-options"] == "nosniff"
    parts = PageParts()
    parts.feed(response.text)
    assert parts.scripts == ["/static/chat.js"]
    assert parts.stylesheets == ["/static/chat.css"]
    assert parts.inline == []


@pytest.mark.parametrize(
    ("path", "name", "media_type"),
    [
        ("/static/chat.js", "chat.js", "text/javascript; charset=utf-8"),
        ("/static/chat.css", "chat.css", "text/css; charset=utf-8"),
    ],
)
def test_the_page_files_are_served_as_shipped(client, path, name, media_type):
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.content == (STATIC / name).read_bytes()
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_the_api_still_needs_the_key_and_unknown_paths_are_404(client):
    assert client.get("/v1/models").status_code == 401  # the page's calls carry the key
    for path in ("/static/other.js", "/static/", "/index.html"):
        assert client.get(path).status_code == 401  # only the page's own files skip the key
        response = client.get(path, headers=AUTH)
        assert response.status_code == 404
        assert response.json()["error"]["message"].startswith(f"no route GET {path};")
    assert client.post("/", json={}).status_code == 401  # only GET and HEAD skip the key
    assert client.post("/", json={}, headers=AUTH).status_code == 405
    assert client.get("/v1/models", headers=AUTH).status_code == 503  # the model never loaded


def test_the_host_check_still_applies_to_the_page(client):
    response = client.get("/", headers={"Host": "attacker.example"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_host"


def test_the_page_is_not_part_of_the_api_document(client):
    paths = client.get("/openapi.json", headers=AUTH).json()["paths"]
    assert "/" not in paths and not any(path.startswith("/static") for path in paths)


def test_pyproject_ships_every_page_file_as_package_data():
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = [f"serve/static/{item.name}" for item in STATIC.iterdir()]
    assert sorted(item.name for item in STATIC.iterdir()) == ["chat.css", "chat.js", "index.html"]
    assert [name for name in shipped if not any(fnmatch.fnmatch(name, p) for p in patterns["glmlab"])] == []
