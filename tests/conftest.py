from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gatewayproc import Gateway, write_config  # noqa: E402

EVAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "eval"


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Factory: start_gateway(sites=..., workers=..., trusted_proxies=..., extra=...) -> running Gateway."""
    started: list[Gateway] = []

    def _start(*, base: Path | None = None, workers: int | None = None, env: dict[str, str] | None = None,
               **config_kw: object) -> Gateway:
        cfg = write_config(base or tmp_path / f"gw{len(started)}", **config_kw)  # type: ignore[arg-type]
        gw = Gateway(cfg, workers=workers, env=env)
        started.append(gw)
        return gw.start()

    yield _start
    for gw in started:
        gw.close()


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway]) -> Gateway:
    """A running gateway with one site, `site.test`, trusting loopback as a proxy."""
    return start_gateway()
