"""The landing zone behaves the same on a folder and on S3 (boto3 against moto's server)."""

from __future__ import annotations

import gzip

import boto3
import pytest

from mage_project.landing import FileLandingZone, LandingZone, S3LandingZone

pytestmark = pytest.mark.integration


@pytest.fixture(params=["file", "s3"])
def zone(request, tmp_path):
    if request.param == "file":
        return LandingZone((tmp_path / "landing").as_uri())
    bucket = request.getfixturevalue("s3_bucket")
    return LandingZone(f"s3://{bucket}/drops/v1")


def test_the_url_picks_the_store(tmp_path, s3_bucket):
    assert isinstance(LandingZone(tmp_path.as_uri()), FileLandingZone)
    assert isinstance(LandingZone(f"s3://{s3_bucket}"), S3LandingZone)
    with pytest.raises(ValueError, match="use file:///path or s3://bucket/prefix"):
        LandingZone("ftp://example.com/x")


def test_parts_are_written_whole_listed_and_read_back(zone, tmp_path):
    rows = [[str(n), f"name, {n}", None if n % 2 else ""] for n in range(5)]
    landed = list(zone.write_parts(lambda n: f"src/ent/date=2026-11-01/run-{n:05d}.csv",
                                   ["id", "name", "note"], iter(rows), chunk_rows=2))
    assert [(f.key, f.rows) for f in landed] == [
        ("src/ent/date=2026-11-01/run-00000.csv", 2),
        ("src/ent/date=2026-11-01/run-00001.csv", 2),
        ("src/ent/date=2026-11-01/run-00002.csv", 1),
    ]
    assert zone.list("src/ent") == [f.key for f in landed]
    assert zone.list("src/other") == []
    assert zone.exists(landed[0].key) and not zone.exists("src/ent/missing.csv")
    first = zone.read_bytes(landed[0].key).decode()
    assert first == 'id,name,note\n0,"name, 0",""\n1,"name, 1",\n'
    assert landed[0].bytes == len(first.encode())
    local = zone.local_copy(landed[2].key, tmp_path / "work")
    assert local.read_text() == 'id,name,note\n4,"name, 4",""\n'


def test_whole_files_round_trip_bytes(zone):
    data = gzip.compress(b"customer_id,email\n1,a@example.com\n")
    zone.write_bytes("crm/customers/2026-11-01/export.csv.gz", data)
    assert zone.read_bytes("crm/customers/2026-11-01/export.csv.gz") == data
    assert zone.list() == ["crm/customers/2026-11-01/export.csv.gz"]


@pytest.mark.parametrize("key", ["../escape.csv", "/abs.csv", "a//b.csv", "a/./b.csv", ""])
def test_keys_cannot_leave_the_zone(zone, key):
    with pytest.raises(ValueError, match="not a relative path"):
        zone.write_bytes(key, b"x")


def test_s3_objects_sit_under_the_prefix(s3_bucket):
    zone = LandingZone(f"s3://{s3_bucket}/drops/v1")
    zone.write_bytes("a/b.csv", b"x\n")
    listed = boto3.client("s3").list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert [o["Key"] for o in listed] == ["drops/v1/a/b.csv"]
