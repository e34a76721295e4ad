from __future__ import annotations

import ipaddress
import multiprocessing
from pathlib import Path

from gateway.state.salts import FileSaltStore
from gateway.ingest.visitor import root_domain, visitor_id

DAY = 86400.0


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_salt_is_16_random_bytes_stable_within_a_day(tmp_path: Path) -> None:
    clock = FakeClock(100 * DAY + 10)
    store = FileSaltStore(tmp_path, clock)
    cur, prev = store.salts()
    assert len(cur) == 16 and prev is None
    clock.t += 3600
    assert store.salts()[0] == cur


def test_rotation_at_midnight_keeps_previous_and_destroys_older(tmp_path: Path) -> None:
    clock = FakeClock(100 * DAY + 10)
    store = FileSaltStore(tmp_path, clock)
    day100, _ = store.salts()
    clock.t = 101 * DAY
    day101, prev = store.salts()
    assert prev == day100 and day101 != day100
    clock.t = 102 * DAY + 5
    day102, prev = store.salts()
    assert prev == day101
    names = sorted(p.name for p in (tmp_path / "salts").iterdir())
    assert names == ["1970-04-12.salt", "1970-04-13.salt"]  # days 101 and 102
    for p in (tmp_path / "salts").iterdir():
        assert day100 not in p.read_bytes()


def test_a_second_process_sees_the_same_salt(tmp_path: Path) -> None:
    first = FileSaltStore(tmp_path).salts()[0]
    assert FileSaltStore(tmp_path).salts()[0] == first


def _salt_in_child(path: str, q: "multiprocessing.Queue[bytes]") -> None:
    q.put(FileSaltStore(Path(path)).salts()[0])


def test_concurrent_creation_by_many_processes_agrees(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    q: multiprocessing.Queue[bytes] = ctx.Queue()
    procs = [ctx.Process(target=_salt_in_child, args=(str(tmp_path), q)) for _ in range(6)]
    for p in procs:
        p.start()
    got = {q.get(timeout=20) for _ in procs}
    for p in procs:
        p.join()
    assert len(got) == 1


def test_salt_files_have_mode_0600(tmp_path: Path) -> None:
    FileSaltStore(tmp_path).salts()
    for p in (tmp_path / "salts").iterdir():
        assert p.stat().st_mode & 0o777 == 0o600


def test_leftover_temporary_salt_files_are_destroyed(tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = FileSaltStore(tmp_path)
    (tmp_path / "salts" / f".tmp-{dead.pid}-abcd").write_bytes(b"x" * 16)
    store.purge()
    assert not (tmp_path / "salts" / f".tmp-{dead.pid}-abcd").exists()


def test_a_live_workers_temporary_salt_file_is_left_alone(tmp_path: Path) -> None:
    # Another worker between writing its candidate salt and publishing it: purging that file
    # made its publish fail (a 500 on the request that created the day's salt).
    import os

    store = FileSaltStore(tmp_path)
    tmp = tmp_path / "salts" / f".tmp-{os.getppid()}-abcd"
    tmp.write_bytes(b"x" * 16)
    store.purge()
    assert tmp.exists()
    os.utime(tmp, (0, 0))  # but not forever: an hour-old one is abandoned whoever wrote it
    store.purge()
    assert not tmp.exists()


SALT = bytes(range(16))
IP = ipaddress.ip_address("203.0.113.5")


def test_visitor_id_is_deterministic_and_signed_64_bit() -> None:
    a = visitor_id(SALT, "UA", IP, "site.test", "site.test")
    assert a == visitor_id(SALT, "UA", IP, "site.test", "site.test")
    assert -(2**63) <= a < 2**63


def test_visitor_id_depends_on_every_input() -> None:
    base = visitor_id(SALT, "UA", IP, "site.test", "site.test")
    assert base != visitor_id(bytes(16), "UA", IP, "site.test", "site.test")
    assert base != visitor_id(SALT, "UA2", IP, "site.test", "site.test")
    assert base != visitor_id(SALT, "UA", ipaddress.ip_address("203.0.113.6"), "site.test", "site.test")
    assert base != visitor_id(SALT, "UA", IP, "other.test", "site.test")


def test_fields_are_length_delimited_so_shifted_boundaries_differ() -> None:
    assert visitor_id(SALT, "ab", None, "c", "x.test") != visitor_id(SALT, "a", None, "bc", "x.test")


def test_subdomains_of_one_registrable_domain_share_a_visitor() -> None:
    assert visitor_id(SALT, "UA", IP, "shop.test", "app.example.com") == visitor_id(SALT, "UA", IP, "shop.test", "example.com")
    assert visitor_id(SALT, "UA", IP, "s", "foo.netlify.app") != visitor_id(SALT, "UA", IP, "s", "bar.netlify.app")


def test_root_domain_keeps_ip_literals_and_none() -> None:
    assert root_domain("192.0.2.1") == "192.0.2.1"
    assert root_domain("(none)") == "(none)"
    assert root_domain("a.b.example.co.uk") == "example.co.uk"


def test_a_remembered_client_keeps_its_visitor_id_only_until_the_salt_rotates(tmp_path: Path) -> None:
    from gateway.enrich.columns import RowColumns
    from gateway.ingest.body import ParsedEvent
    from gateway.ingest.clients import Client
    from gateway.ingest.row import RowBuilder
    from gateway.ingest.visitor import Visitors
    from gateway.schema import INDEX
    from gateway.state.generation import Generation
    from shields.model import SiteConfig

    clock = FakeClock(100 * DAY + 10)
    salts = FileSaltStore(tmp_path / "salts", clock=clock)
    site = SiteConfig(domain="site.test")
    generation = Generation()
    rows = RowBuilder(RowColumns(cache_size=16), Visitors(salts, generation))
    ua, ip = "Mozilla/5.0 Firefox/131.0", ipaddress.ip_address("203.0.113.9")
    kept = Client(ip, ua, generation=generation.value, verdicts={}, visitor_ids={})

    def user_id(client: Client, hostname: str = "site.test") -> int:
        e = ParsedEvent(name="pageview", domain="site.test", url=f"https://{hostname}/", hostname=hostname, pathname="/")
        [row] = rows.rows([(e, site)], client)
        return int(row[INDEX["user_id"]])

    first = user_id(kept)
    assert generation.value == 0  # the salt of the day the worker started with
    assert first == visitor_id(salts.salts()[0], ua, ip, "site.test", "site.test")
    assert user_id(kept) == first and kept.visitor_ids == {("site.test", "site.test"): first}
    assert user_id(kept, "blog.site.test") == first  # same registrable domain, same visitor
    clock.t = 101 * DAY + 5
    rotated = user_id(kept)
    assert rotated != first and rotated == visitor_id(salts.salts()[0], ua, ip, "site.test", "site.test")
    # the new salt moved the generation: the old client's kept id is never used again, and the
    # client the memo makes next keeps the new one
    assert generation.value == 1 and user_id(kept) == rotated
    fresh = Client(ip, ua, generation=generation.value, verdicts={}, visitor_ids={})
    assert user_id(fresh) == rotated and fresh.visitor_ids == {("site.test", "site.test"): rotated}
