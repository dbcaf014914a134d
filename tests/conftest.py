"""Shared fixtures: real Tor documents from tests/data (see its README)."""

import lzma
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def read_data(name: str) -> bytes:
    """Bytes of a file in tests/data; ``.xz`` files are decompressed."""
    path = DATA / name
    if path.suffix == ".xz":
        return lzma.decompress(path.read_bytes())
    return path.read_bytes()


@pytest.fixture(scope="session")
def consensus_bytes() -> bytes:
    return read_data("2022-11-19-10-00-00-consensus.xz")


@pytest.fixture(scope="session")
def microdesc_bytes() -> bytes:
    return read_data("2022-11-19-10-00-00-consensus-microdesc.xz")


@pytest.fixture(scope="session")
def certs_bytes() -> bytes:
    return read_data("2022-11-certs")


@pytest.fixture(scope="session")
def consensus(consensus_bytes):
    from agent.model.snapshot import DocKind
    from agent.parse.documents import parse_document

    return parse_document(DocKind.CONSENSUS, consensus_bytes, "tests/data")


@pytest.fixture(scope="session")
def microdesc_consensus(microdesc_bytes):
    from agent.model.snapshot import DocKind
    from agent.parse.documents import parse_document

    return parse_document(DocKind.MICRODESC_CONSENSUS, microdesc_bytes, "tests/data")


@pytest.fixture(scope="session")
def certificates(certs_bytes):
    from agent.model.snapshot import DocKind
    from agent.parse.documents import parse_document

    return parse_document(DocKind.KEY_CERTIFICATES, certs_bytes, "tests/data")


SHARED_TORDATA = Path(__file__).parents[2] / "shared" / "tordata"


def parse_data(kind_name: str, name: str):
    """A parsed document from tests/data, kind named as in agent.model.snapshot.DocKind."""
    from agent.model.snapshot import DocKind
    from agent.parse.documents import parse_document

    return parse_document(DocKind(kind_name), read_data(name), f"tests/data/{name}")


def full_consensuses() -> list[Path]:
    """Every full real consensus in ../shared/tordata (the CI checkout has it beside the repo)."""
    import os

    paths = sorted((SHARED_TORDATA / "consensus").glob("*consensus*"))
    if not paths and os.environ.get("CI"):
        raise RuntimeError(f"{SHARED_TORDATA} is missing; CI must have shared/ beside the repo")
    return paths


def run_backfill(config, paths, **options):
    """``agent.loop.backfill.backfill`` as the command runs it (no progress bar), with the state and store it
    opens closed again, and the GeoIP excerpt of tests/data."""
    from agent.loop.backfill import backfill
    from agent.metrics.geoip import GeoIP
    from agent.pipeline.state import State
    from agent.store.store import Store

    state, store = State(config.state_dir), Store.from_config(config)
    try:
        return backfill(paths, config, state, store, GeoIP.load(DATA / "geoip-excerpt"), progress=False, **options)
    finally:
        store.close()
        state.close()


# Two consecutive real hours and the server descriptors published in the first (per test module: tests edit them).
@pytest.fixture(scope="module")
def hour10():
    return parse_data("consensus", "2020-02-29-10-00-00-consensus.xz")


@pytest.fixture(scope="module")
def hour11():
    return parse_data("consensus", "2020-02-29-11-00-00-consensus.xz")


@pytest.fixture(scope="module")
def descriptors():
    return parse_data("server-descriptors", "2020-02-29-10-05-00-server-descriptors.xz")
