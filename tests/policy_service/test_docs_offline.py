"""``/docs`` and ``/redoc`` work with no internet: every script, style and icon they load comes from the
service itself (a real ``mango serve`` on loopback), and each of those URLs answers."""

from __future__ import annotations

import re

import pytest

from .conftest import LiveServer

#: what each page must load for the viewer to start (its script), matched against the page's local URLs
PAGES = {"/docs": "swagger-ui-bundle.js", "/redoc": "redoc.standalone.js"}

#: src= / href= attributes, Swagger UI's ``url: '...'`` and ReDoc's ``spec-url="..."``
_REFS = re.compile(r"""(?:\bsrc|\bhref|\bspec-url)\s*=\s*["']([^"']+)["']|\burl:\s*["']([^"']+)["']""")


def page_refs(html: str) -> list[str]:
    """Every URL an HTML page loads or points at (attributes and Swagger UI's spec ``url``)."""
    return [a or b for a, b in _REFS.findall(html)]


def test_page_refs_finds_remote_and_local_urls() -> None:
    # The extraction the offline test relies on sees a CDN script and a local stylesheet.
    html = (
        '<link rel="stylesheet" href="/static/a.css"><script src="https://cdn.example/x.js"></script>'
        "<script>SwaggerUIBundle({url: '/openapi.json'})</script>"
    )
    assert page_refs(html) == ["/static/a.css", "https://cdn.example/x.js", "/openapi.json"]


@pytest.mark.parametrize(("page", "script"), PAGES.items())
def test_docs_page_loads_only_local_urls_that_answer(live_server: LiveServer, page: str, script: str) -> None:
    with live_server.client(key=None) as http:
        html = http.get(page)
        assert html.status_code == 200, html.text
        other_host = re.search(r"(https?:)?//[\w.-]+\.\w", html.text)
        assert other_host is None, f"{page} names another host:\n{html.text}"
        refs = page_refs(html.text)
        assert any(ref.endswith(script) for ref in refs), f"{page} does not load {script}: {refs}"
        assert "/openapi.json" in refs
        for ref in refs:
            assert ref.startswith("/") and not ref.startswith("//"), f"{page} loads {ref!r} from elsewhere"
            answer = http.get(ref)
            assert answer.status_code == 200, f"{page}: GET {ref} -> {answer.status_code}"
            if ref.endswith(".js"):
                # the viewer itself, not an error page or a stub
                assert "javascript" in answer.headers["content-type"]
                assert len(answer.content) > 100_000, f"{ref}: only {len(answer.content)} bytes"
            elif ref.endswith(".css"):
                assert answer.headers["content-type"].startswith("text/css")
