"""Specification of textweaver.app.http: the hosts a server answers to, download names, and one content security
policy for the pages and the servers' header."""

from __future__ import annotations

import re

import pytest

from textweaver.app import http
from textweaver.app import serve as server
from textweaver.app.http import content_disposition, host_allowed


@pytest.mark.parametrize(("host", "listen", "allowed"), [
    ("127.0.0.1:8000", "127.0.0.1", True), ("localhost", "127.0.0.1", True), ("[::1]:8000", "127.0.0.1", True),
    ("Localhost:8000", "::1", True), ("studio.lan:8000", "studio.lan", True), ("10.0.0.5:80", "10.0.0.5", True),
    ("10.0.0.5:80", "0.0.0.0", True), ("[fe80::1]:8000", "::", True), ("0.0.0.0:8000", "0.0.0.0", True),
    ("attacker.example:8000", "127.0.0.1", False), ("attacker.example", "0.0.0.0", False),
    ("127.0.0.1.nip.io:8000", "127.0.0.1", False), ("localhost.attacker.example", "127.0.0.1", False),
    ("10.0.0.5:80", "127.0.0.1", False), ("", "127.0.0.1", False), ("127.0.0.1:80:80", "127.0.0.1", False),
    ("[::1", "127.0.0.1", False), ("localhost:port", "127.0.0.1", False), ("studio.lan", "10.0.0.5", False),
])  # fmt: skip
def test_the_hosts_the_server_answers_to(host: str, listen: str, allowed: bool) -> None:
    assert host_allowed(host, listen) is allowed


def test_download_names_in_any_script_follow_rfc_6266() -> None:
    chinese = content_disposition("西游记-1-report.html")
    assert (
        chinese
        == "attachment; filename=\"___-1-report.html\"; filename*=UTF-8''%E8%A5%BF%E6%B8%B8%E8%AE%B0-1-report.html"
    )
    assert chinese.encode("latin-1")  # an HTTP header is Latin-1: the name travels percent-encoded
    assert (
        content_disposition('a "b"\\c.zip')
        == "attachment; filename=\"a _b__c.zip\"; filename*=UTF-8''a%20%22b%22%5Cc.zip"
    )


def test_the_pages_declare_the_same_content_security_policy_as_the_servers_header() -> None:
    """One policy: the header serve and the studio send, and the meta tag that guards a static export."""
    for page in ("index.html", "studio.html"):
        html = (server.WEB_DIR / page).read_text(encoding="utf-8")
        meta = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', html)
        assert meta is not None and meta.group(1) == http.PAGE_CSP, page
