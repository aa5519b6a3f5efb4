"""Registering by URI: the file under a root is copied and hashed; every escape and SSRF attempt is refused."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import obstore
import pytest

from mloop_common.artifacts import S3ArtifactStore
from mloop_common.errors import InvalidInput, PayloadTooLarge
from mloop_common.settings import S3Settings
from mloop_common.testing import local_s3, new_bucket
from mloop_ingest.sources import Root, Sources, public_address

DATA = b"usage,churned\n1,yes\n2,no\n"


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "churn.csv").write_bytes(DATA)
    (tmp_path / "secret.csv").write_bytes(b"password\nhunter2\n")
    spool = tmp_path / "spool"
    spool.mkdir()
    return {"root": root, "outside": tmp_path / "secret.csv", "spool": spool}


def local(layout: dict[str, Path]) -> Sources:
    return Sources.of([f"file://{layout['root']}/"])


def fetch(sources: Sources, uri: str, layout: dict[str, Path], limit: int = 1_000_000):  # type: ignore[no-untyped-def]
    return sources.fetch(uri, limit=limit, directory=layout["spool"])


def test_a_file_under_the_root_is_copied_to_the_spool_with_its_digest(layout):
    spooled = fetch(local(layout), f"file://{layout['root']}/churn.csv", layout)

    assert spooled.path.parent == layout["spool"] and spooled.path.read_bytes() == DATA
    assert (spooled.sha256, spooled.size, spooled.filename) == (
        hashlib.sha256(DATA).hexdigest(),
        len(DATA),
        "churn.csv",
    )


def test_localhost_as_the_file_host_is_the_same_place(layout):
    assert fetch(local(layout), f"file://localhost{layout['root']}/churn.csv", layout).size == len(DATA)


def escapes(layout: dict[str, Path]) -> list[tuple[str, str]]:
    root = layout["root"]
    return [
        ("file:///etc/passwd", "not under a configured source root"),
        (f"file://{root}/../secret.csv", "without '.' or '..' segments"),
        (f"file://{root}/sub/../../secret.csv", "without '.' or '..' segments"),
        (f"file://{root}/./churn.csv", "without '.' or '..' segments"),
        (f"file://{root}/%2e%2e/secret.csv", "percent-encodes"),
        (f"file://{root}/%2E%2E%2Fsecret.csv", "percent-encodes"),
        (f"file://{root}/%252e%252e/secret.csv", "percent-encodes"),
        (f"file://{root}/sub\\..\\..\\secret.csv", "backslash"),
        (f"file://{root}/churn.csv%00.txt", "control character"),
        (f"file://evil.example{root}/churn.csv", "not under a configured source root"),
        (f"file://user:pw@localhost{root}/churn.csv", "credentials"),
        (f"file://{root}/churn.csv?x=1", "query or fragment"),
        (f"ftp://{root}/churn.csv", "scheme 'ftp' is not supported"),
        (f"{root}/churn.csv", "scheme '' is not supported"),
        (f"file://{root}x/churn.csv", "not under a configured source root"),  # a sibling with the root's prefix
    ]


@pytest.mark.parametrize("case", range(15))
def test_every_escape_from_the_root_is_refused_naming_the_uri_field(layout, case):
    uri, reason = escapes(layout)[case]

    with pytest.raises(InvalidInput) as refused:
        fetch(local(layout), uri, layout)

    assert refused.value.field == "uri"
    assert reason in refused.value.message
    assert list(layout["spool"].iterdir()) == []


def test_a_symlink_leaving_the_root_is_refused_and_one_inside_it_is_followed(layout):
    (layout["root"] / "leak.csv").symlink_to(layout["outside"])
    (layout["root"] / "sub" / "alias.csv").symlink_to(layout["root"] / "churn.csv")
    (layout["root"] / "sub" / "up").symlink_to(layout["root"].parent, target_is_directory=True)

    with pytest.raises(InvalidInput, match="leaves its source root"):
        fetch(local(layout), f"file://{layout['root']}/leak.csv", layout)
    with pytest.raises(InvalidInput, match="leaves its source root"):
        fetch(local(layout), f"file://{layout['root']}/sub/up/secret.csv", layout)
    assert fetch(local(layout), f"file://{layout['root']}/sub/alias.csv", layout).path.read_bytes() == DATA


def test_a_folder_or_a_missing_file_is_refused(layout):
    with pytest.raises(InvalidInput, match="not a regular file"):
        fetch(local(layout), f"file://{layout['root']}/sub", layout)
    with pytest.raises(InvalidInput, match="no file at"):
        fetch(local(layout), f"file://{layout['root']}/nope.csv", layout)


def test_a_source_over_the_size_limit_is_refused_and_leaves_nothing(layout):
    with pytest.raises(PayloadTooLarge):
        fetch(local(layout), f"file://{layout['root']}/churn.csv", layout, limit=10)

    assert list(layout["spool"].iterdir()) == []


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.5",
        "172.16.3.4",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "0.0.0.0",
        "::ffff:127.0.0.1",
        "fd00::1",
        "224.0.0.1",
    ],
)
def test_hosts_resolving_to_loopback_private_or_link_local_addresses_are_refused(layout, address):
    sources = Sources(roots=(Root.parse("https://data.example.test/exports/"),), resolve=lambda host, port: [address])

    with pytest.raises(InvalidInput, match="resolves to a loopback, private or link-local address") as refused:
        fetch(sources, "https://data.example.test/exports/churn.csv", layout)

    assert refused.value.field == "uri" and address in refused.value.message


def test_one_private_answer_among_public_ones_is_enough_to_refuse(layout):
    sources = Sources(
        roots=(Root.parse("https://data.example.test/"),), resolve=lambda host, port: ["93.184.216.34", "10.1.1.1"]
    )

    with pytest.raises(InvalidInput, match="10.1.1.1"):
        fetch(sources, "https://data.example.test/churn.csv", layout)


def test_the_system_resolver_is_checked_too(layout):
    sources = Sources.of(["http://localhost/"])

    with pytest.raises(InvalidInput, match="loopback"):
        fetch(sources, "http://localhost/churn.csv", layout)


def test_public_addresses_are_allowed():
    assert public_address("93.184.216.34") and public_address("2606:2800:220:1:248:1893:25c8:1946")


def test_an_http_uri_must_match_the_roots_host_port_and_prefix(layout):
    sources = Sources(roots=(Root.parse("https://data.example.test/exports/"),), resolve=lambda h, p: ["93.184.216.34"])

    for uri in (
        "https://other.example.test/exports/churn.csv",
        "https://data.example.test:8443/exports/churn.csv",
        "http://data.example.test/exports/churn.csv",
        "https://data.example.test/private/churn.csv",
    ):
        with pytest.raises(InvalidInput, match="not under a configured source root"):
            fetch(sources, uri, layout)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the http.server interface)
        if self.path.endswith("/moved.csv"):
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(DATA)))
        self.end_headers()
        self.wfile.write(DATA)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def served(port: int) -> Sources:
    """A root on a local test server, with the address rule relaxed for it (nothing else reaches 127.0.0.1)."""
    return Sources(roots=(Root.parse(f"http://127.0.0.1:{port}/exports/"),), allowed=lambda address: True)


def test_a_redirect_is_refused_not_followed(layout, server):
    with pytest.raises(InvalidInput, match="redirect") as refused:
        fetch(served(server), f"http://127.0.0.1:{server}/exports/moved.csv", layout)

    assert refused.value.field == "uri" and list(layout["spool"].iterdir()) == []


def test_a_file_served_under_an_http_root_is_copied_with_its_digest(layout, server):
    spooled = fetch(served(server), f"http://127.0.0.1:{server}/exports/churn.csv", layout)

    assert spooled.path.read_bytes() == DATA and spooled.sha256 == hashlib.sha256(DATA).hexdigest()


def test_a_root_that_is_not_a_url_with_an_absolute_path_is_refused_at_start():
    for bad in ("/srv/data", "ftp://host/x/", "https:///nohost/", "file://relative", "s3:///no-bucket/"):
        with pytest.raises(ValueError):
            Root.parse(bad)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Settings]:
    with local_s3() as endpoint:
        yield endpoint


def test_an_object_under_an_s3_root_is_copied_with_its_digest_and_others_are_refused(layout, s3):
    bucket, other = new_bucket(s3), new_bucket(s3)
    store = S3ArtifactStore.from_url(f"s3://{bucket}", s3).store
    obstore.put(store, "exports/churn.csv", DATA)
    obstore.put(store, "private/churn.csv", DATA)
    obstore.put(S3ArtifactStore.from_url(f"s3://{other}", s3).store, "exports/churn.csv", DATA)
    sources = Sources.of([f"s3://{bucket}/exports/"], s3)

    spooled = fetch(sources, f"s3://{bucket}/exports/churn.csv", layout)

    assert spooled.path.read_bytes() == DATA and spooled.sha256 == hashlib.sha256(DATA).hexdigest()
    assert spooled.filename == "churn.csv"
    for outside in (
        f"s3://{bucket}/private/churn.csv",  # another prefix of the same bucket
        f"s3://{other}/exports/churn.csv",  # the same prefix of another bucket
        f"s3://{bucket}/exports/../private/churn.csv",
        f"s3://{bucket}/exports/%2e%2e/private/churn.csv",
    ):
        with pytest.raises(InvalidInput) as refused:
            fetch(sources, outside, layout)
        assert refused.value.field == "uri"
    with pytest.raises(InvalidInput, match="no object at"):
        fetch(sources, f"s3://{bucket}/exports/missing.csv", layout)
    with pytest.raises(PayloadTooLarge):
        fetch(sources, f"s3://{bucket}/exports/churn.csv", layout, limit=10)
    assert [p.name for p in layout["spool"].iterdir()] == [spooled.path.name]  # nothing left by the refusals
