"""The warehouse on an object store: an S3 server on loopback (moto in server mode) stands in for the
bucket. The same partitions, facts and rows as on local disk; each partition replaced whole (a reader
racing a writer sees the old object or the new one, never a part); the staging of input rows stays on
the data root's disk; and the main job's results do not depend on where the warehouse lives."""

import socket
import threading

import pandas as pd
import pytest

from meta_pipeline import names
from meta_pipeline.defs.resources import DataRoot
from meta_pipeline.settings import Settings
from meta_pipeline.storage import Warehouse
from meta_pipeline_tests import test_reconciliation_e2e as e2e
from meta_pipeline_tests.pipeline import run_range, test_resources

moto_server = pytest.importorskip("moto.server", reason="moto[server] is needed for the S3 server")
boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs", reason="s3fs is the fsspec backend for s3:// URLs")
pytest.importorskip("upath", reason="universal-pathlib addresses the warehouse by URL")

BUCKET = "meta-pipeline-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """A real S3-protocol server on loopback, with a bucket; the AWS environment points at it (one
    server for the module: fsspec caches one filesystem per protocol and options)."""
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
        client.create_bucket(Bucket=BUCKET)
        try:
            yield client
        finally:
            server.stop()


def _timeless(facts):
    """Partition facts without the wall-clock fetch times (the two runs fetched at different times)."""
    if isinstance(facts, dict):
        return {k: _timeless(v) for k, v in facts.items() if k != "fetched_at"}
    return facts


def _keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def test_partitions_facts_and_tables_round_trip_through_the_bucket(s3, tmp_path):
    warehouse = Warehouse(tmp_path / "warehouse", location=f"s3://{BUCKET}/roundtrip/")
    assert warehouse.remote
    frame = pd.DataFrame({"agent": ["a", "b"], "net_bps": [1.5, -2.25]})
    warehouse.write_partition("reconciled_trades", "2024-03-01", frame, facts={"fetched": ["BTCUSDT"]})
    warehouse.write_partition("reconciled_trades", "2024-03-02", frame.iloc[:0])
    warehouse.write_table("agent_stats", frame)
    assert _keys(s3, "roundtrip/") == [
        "roundtrip/agent_stats.parquet",
        "roundtrip/reconciled_trades/2024-03-01.parquet",
        "roundtrip/reconciled_trades/2024-03-02.parquet",
    ]
    pd.testing.assert_frame_equal(warehouse.read_partition("reconciled_trades", "2024-03-01"), frame)
    assert warehouse.read_partition_facts("reconciled_trades", "2024-03-01") == {"fetched": ["BTCUSDT"]}
    assert warehouse.read_partition_facts("reconciled_trades", "2024-03-02") is None
    assert warehouse.read_partition("reconciled_trades", "2024-03-03") is None
    assert warehouse.stored_keys("reconciled_trades") == ["2024-03-01", "2024-03-02"]
    assert warehouse.holds_rows("reconciled_trades") and not warehouse.holds_rows("price_bars")
    pd.testing.assert_frame_equal(warehouse.read_table("agent_stats"), frame)
    path = warehouse.partition_path("reconciled_trades", "2024-03-01")
    assert warehouse.modified_ns(path) > pd.Timestamp("2020-01-01").value
    assert not (tmp_path / "warehouse").exists()  # nothing of the partitions on the local disk


def test_a_replaced_partition_is_never_seen_half_written(s3, tmp_path):
    warehouse = Warehouse(tmp_path / "warehouse", location=f"s3://{BUCKET}/atomic")
    small = pd.DataFrame({"x": range(10)})
    large = pd.DataFrame({"x": range(200_000)})  # several MB: a torn write would show
    warehouse.write_partition("t", "2024-03-01", small)
    stop = threading.Event()
    failures: list[BaseException] = []

    def writer():
        try:
            while not stop.is_set():
                for frame in (large, small):
                    warehouse.write_partition("t", "2024-03-01", frame)
        except BaseException as exc:  # noqa: BLE001 — reported by the test below
            failures.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = set()
        for _ in range(30):
            got = warehouse.read_partition("t", "2024-03-01")
            assert got is not None and len(got) in (len(small), len(large))
            assert got["x"].tolist() == list(range(len(got)))  # whole, never a prefix or a mix
            seen.add(len(got))
    finally:
        stop.set()
        thread.join()
    assert not failures, failures
    assert seen  # the reads ran while the writes did


def test_the_main_job_gives_the_same_results_with_the_warehouse_on_the_bucket(s3, tmp_path, fake_exchange):
    local, remote = tmp_path / "local", tmp_path / "remote"
    for root in (local, remote):
        e2e._write_root(root)
    url = f"s3://{BUCKET}/runs/one"
    for root, warehouse_url in ((local, None), (remote, url)):
        resources = test_resources(root, fake_exchange, round_trip_cost_bps=7.5)
        resources["data_root"] = DataRoot(root=str(root), warehouse_url=warehouse_url)
        assert run_range(
            root, fake_exchange, "2024-03-01", "2024-03-03", e2e.ASSETS, resources=resources
        ).success
    on_disk = Warehouse(local / names.WAREHOUSE_DIR)
    in_bucket = Warehouse(remote / names.WAREHOUSE_DIR, location=url)
    for asset in (names.SIGNALS, names.PRICE_BARS, names.RECONCILED_TRADES):
        assert in_bucket.stored_keys(asset) == on_disk.stored_keys(asset) != []
        for key in on_disk.stored_keys(asset):
            want, got = on_disk.read_partition(asset, key), in_bucket.read_partition(asset, key)
            pd.testing.assert_frame_equal(got, want, check_like=False)
            assert _timeless(in_bucket.read_partition_facts(asset, key)) == _timeless(
                on_disk.read_partition_facts(asset, key)
            )
    # what the app reads is written on the data root, the same bytes either way
    assert (remote / names.RECONCILED_FILE).read_bytes() == (local / names.RECONCILED_FILE).read_bytes()
    # the partitions are in the bucket only; the staging of input rows stayed on the root's disk
    assert any(k.startswith("runs/one/reconciled_trades/") for k in _keys(s3, "runs/one/"))
    assert not list((remote / names.WAREHOUSE_DIR).glob("reconciled_trades/*.parquet"))
    assert (remote / names.WAREHOUSE_DIR).is_dir() and not any("staging" in k for k in _keys(s3, "runs/"))


def test_the_warehouse_url_setting_reaches_the_data_root(tmp_path):
    settings = Settings.from_env(
        {"META_PIPELINE_ROOT": str(tmp_path), "META_PIPELINE_WAREHOUSE_URL": f"s3://{BUCKET}/prod/"}
    )
    assert settings.warehouse_url == f"s3://{BUCKET}/prod"
    from meta_pipeline.defs.resources import default_resources

    warehouse = default_resources(settings)["data_root"].warehouse
    assert warehouse.remote and str(warehouse.partition_path("signals", "2024-03-01")) == (
        f"s3://{BUCKET}/prod/signals/2024-03-01.parquet"
    )
    assert warehouse.directory == tmp_path / names.WAREHOUSE_DIR


def test_the_supervisor_ledgers_read_the_bucket_as_they_read_the_disk(s3, tmp_path, fake_exchange):
    """The supervisor's per-day ledgers fingerprint and read partitions through the warehouse, so
    with the warehouse in the bucket they give what they give on local disk (and stay local)."""
    from meta_pipeline.supervisor import ledger, ledger_confidence, ledger_portfolio, ledger_quality

    local, remote = tmp_path / "local", tmp_path / "remote"
    url = f"s3://{BUCKET}/runs/ledgers"
    for root, warehouse_url in ((local, None), (remote, url)):
        e2e._write_root(root)
        resources = test_resources(root, fake_exchange)
        resources["data_root"] = DataRoot(root=str(root), warehouse_url=warehouse_url)
        assert run_range(
            root, fake_exchange, "2024-03-01", "2024-03-04", e2e.ASSETS, resources=resources
        ).success
    results = {}
    for root, warehouse_url in ((local, None), (remote, url)):
        warehouse = Warehouse(root / names.WAREHOUSE_DIR, location=warehouse_url)
        as_of = pd.Timestamp("2024-03-10", tz="UTC")
        results[root] = (
            ledger.ledger_agent_stats(root / "ledger" / "stats", warehouse)[0],
            ledger_confidence.ledger_confidence(root / "ledger", warehouse)[0],
            ledger_portfolio.ledger_portfolio_figures(root / "ledger" / "portfolio", warehouse)[0],
            ledger_quality.ledger_input_quality(root / "ledger" / "quality", warehouse, as_of=as_of)[0],
        )
        # a second call reads nothing again: the fingerprints of the objects did not change
        _, report = ledger.ledger_agent_stats(root / "ledger" / "stats", warehouse)
        assert report.trade_days_read == [] and report.mode == "ledger"
    (stats_l, conf_l, port_l, qual_l), (stats_r, conf_r, port_r, qual_r) = results[local], results[remote]
    assert stats_l["trades"].sum() > 0
    pd.testing.assert_frame_equal(stats_r, stats_l)
    pd.testing.assert_frame_equal(conf_r, conf_l)
    assert port_r == port_l and qual_r == qual_l
