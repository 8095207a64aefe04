"""The client against a real `maelab serve` on a fresh PostgreSQL database.

Needs the server binary ($MAELAB_BIN, default target/debug/maelab) and an
admin URL ($MAELAB_TEST_DATABASE_URL) to create a database through `psql`.
Skips without the binary, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from conftest import FAST, free_port
from test_client import PNG

import maelab
from maelab import _protocol as proto
from maelab._transport import Transport

REPO = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("MAELAB_BIN") or REPO / "target" / "debug" / "maelab")
ADMIN_URL = os.environ.get("MAELAB_TEST_DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI=true: the real-server test must run)")
    pytest.skip(why)


def _psql(sql: str) -> None:
    subprocess.run(
        ["psql", ADMIN_URL, "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _get(url: str, path: str, token: str):
    req = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(url, token) of a `maelab serve` on its own database, removed after."""
    if not BIN.is_file():
        _unavailable(
            f"no server binary at {BIN}: `cargo build -p maelab-server --bin maelab` or set MAELAB_BIN"
        )
    if shutil.which("psql") is None:
        _unavailable("psql not found (scripts/setup installs PostgreSQL's client)")
    db = f"maelab_pytest_{uuid.uuid4().hex[:12]}"
    try:
        _psql(f'CREATE DATABASE "{db}"')
    except subprocess.CalledProcessError as e:
        _unavailable(f"cannot create a database on {ADMIN_URL}: {e.stderr.strip()}")
    parts = urlsplit(ADMIN_URL)
    db_url = urlunsplit(parts._replace(path=f"/{db}"))
    tmp = tmp_path_factory.mktemp("maelab-server")
    log = open(tmp / "server.log", "wb")
    proc = None
    try:
        token = subprocess.run(
            [str(BIN), "token", "create", "--name", "pytest", "--database-url", db_url],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout.strip()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [
                str(BIN),
                "serve",
                "--bind",
                f"127.0.0.1:{port}",
                "--database-url",
                db_url,
                "--data-dir",
                str(tmp / "data"),
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"maelab serve exited ({proc.returncode}): {(tmp / 'server.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("maelab serve did not answer /healthz within 60 s")
            time.sleep(0.1)
        yield url, token
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        _psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _mae_log_stats(epoch: int) -> dict:
    # The dict main_finetune.py writes to log.txt once per epoch.
    train_stats = {"lr": 1e-3 * (epoch + 1), "loss": 2.0 - 0.5 * epoch}
    test_stats = {"loss": 1.5 - 0.25 * epoch, "acc1": 40.0 + 10 * epoch, "acc5": 80.0 + 5 * epoch}
    return {
        **{f"train_{k}": v for k, v in train_stats.items()},
        **{f"test_{k}": v for k, v in test_stats.items()},
        "epoch": epoch,
        "n_parameters": 85_800_000,
    }


def test_mae_epochs_image_and_finish(server, tmp_path):
    url, token = server
    run = maelab.init(
        "pytest-mae-finetune",
        config={"model": "vit_base_patch16", "epochs": 3},
        tags=["pytest"],
        kind="finetune",
        url=url,
        token=token,
        spool_dir=tmp_path,
    )
    assert run.id, "created online"
    for epoch in range(3):
        run.log(_mae_log_stats(epoch), step=epoch)
    run.log({"custom/grad_norm": 0.5}, step=2)
    run.log_image("recon", PNG, step=2)
    run.finish(timeout=30)
    assert not list(tmp_path.glob("*.jsonl")), "nothing spooled: every request was accepted"

    detail = _get(url, f"/api/v1/runs/{run.id}", token)
    assert detail["status"] == "succeeded" and detail["best_acc1"] == 60.0
    epochs = _get(url, f"/api/v1/runs/{run.id}/epochs", token)
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    assert [e["test_acc1"] for e in epochs] == [40.0, 50.0, 60.0]
    assert [e["train_loss"] for e in epochs] == [2.0, 1.5, 1.0]
    assert epochs[2]["n_parameters"] == 85_800_000
    artifacts = _get(url, f"/api/v1/runs/{run.id}/artifacts", token)
    recon = [a for a in artifacts if a["name"] == "recon-0002.png"]
    assert recon and recon[0]["kind"] == "reconstruction" and recon[0]["epoch"] == 2

    # The same client_run_id again: the same run, nothing created.
    t = Transport(url, token, retry=FAST)
    body = {"name": "pytest-mae-finetune", "kind": "finetune", "client_run_id": run.client_run_id}
    assert proto.send_create(t, body) == (run.id, False, "succeeded")
    t.close()


def test_offline_run_synced_to_the_server(server, tmp_path):
    url, token = server
    run = maelab.init(
        "pytest-offline", url=f"http://127.0.0.1:{free_port()}", token=token, spool_dir=tmp_path, retry=FAST
    )
    for epoch in range(2):
        run.log(_mae_log_stats(epoch), step=epoch)
    run.finish()
    (path,) = tmp_path.glob("*.jsonl")
    backup = path.read_bytes()
    out: list = []
    assert maelab.sync_dir(tmp_path, url=url, token=token, out=out.append) == 0, out
    assert not path.exists()
    run_id = out[0].split("run ", 1)[1].split(":", 1)[0]
    assert _get(url, f"/api/v1/runs/{run_id}", token)["status"] == "succeeded"
    assert len(_get(url, f"/api/v1/runs/{run_id}/epochs", token)) == 2
    # The same file again (a sync killed before it deleted the file): no second run, nothing sent.
    path.write_bytes(backup)
    assert maelab.sync_dir(tmp_path, url=url, token=token, out=out.append) == 0, out
    assert f"run {run_id}:" in out[-1] and "finished succeeded already; nothing sent" in out[-1]
    assert len(_get(url, f"/api/v1/runs/{run_id}/epochs", token)) == 2
