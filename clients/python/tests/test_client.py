"""The client against the fake server: batching, retries, spool, sync, exit."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import FAST, free_port, start_fake, stop_fake

import maelab
from maelab import _protocol as proto

CLIENT_DIR = Path(__file__).resolve().parents[1]
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201a5e2d0d40000000049454e44ae426082"
)


def lines_of(path: Path) -> list:
    return [json.loads(x) for x in path.read_text().splitlines()]


# ---- create ---------------------------------------------------------------


def test_create_sends_config_token_and_client_run_id(fake, make_run):
    run = make_run(
        name="mae-vitb", config={"epochs": 800}, tags=["cluster"], kind="finetune", lost_after_seconds=120
    )
    (req,) = fake.of("POST", "/runs/external")
    assert req.headers["authorization"] == "Bearer t0k"
    assert req.json() == {
        "name": "mae-vitb",
        "tags": ["cluster"],
        "config": {"epochs": 800},
        "kind": "finetune",
        "client_run_id": run.client_run_id,
        "lost_after_seconds": 120,
    }
    assert len(run.client_run_id) == 32 and run.id == fake.runs[run.client_run_id]


def test_config_from_argparse_takes_paths_and_refuses_nan(fake, make_run):
    args = argparse.Namespace(model="mae_vit_base_patch16", output_dir=Path("/out"), lr=None, blr=1.5e-4)
    make_run(config=vars(args))
    assert fake.of("POST", "/runs/external")[0].json()["config"] == {
        "model": "mae_vit_base_patch16",
        "output_dir": "/out",
        "lr": None,
        "blr": 1.5e-4,
    }
    with pytest.raises(ValueError, match="NaN"):
        make_run(config={"lr": math.nan})


def test_create_is_idempotent_by_client_run_id(fake, make_run):
    a = make_run(client_run_id="fixed-id")
    b = make_run(client_run_id="fixed-id")
    assert a.id == b.id and len(fake.runs) == 1 and len(fake.of("POST", "/runs/external")) == 2


def test_a_finished_client_run_id_is_refused(fake, make_run):
    make_run(client_run_id="done").finish()
    with pytest.raises(ValueError, match="is succeeded and takes no more points"):
        make_run(client_run_id="done")


def test_create_refused_raises(fake, spool):
    fake.on(
        "POST /api/v1/runs/external",
        lambda r: (401, {}, {"error": "unauthorized", "field": None, "reason": "bad token"}),
    )
    with pytest.raises(maelab.MaelabError, match="bad token"):
        maelab.init("x", url=fake.url, token="nope", spool_dir=spool, retry=FAST)
    assert not spool.exists()


# ---- batching -------------------------------------------------------------


def test_flushes_at_500_points(fake, make_run):
    run = make_run(flush_seconds=60)
    for i in range(499):
        run.log({"train_loss": 1.0}, step=i)
    time.sleep(0.3)
    assert fake.of("POST", "/metrics") == []
    run.log({"train_loss": 1.0}, step=499)
    assert fake.wait_for(lambda: fake.of("POST", "/metrics"), 2)
    assert len(fake.points()) == 500 and len(fake.of("POST", "/metrics")) == 1


def test_flushes_every_2_seconds_by_default(fake, make_run):
    run = make_run()
    t0 = time.monotonic()
    run.log({"train_loss": 0.5, "train_lr": 1e-4, "epoch": 0}, step=0)
    time.sleep(1.0)
    assert fake.of("POST", "/metrics") == []
    assert fake.wait_for(lambda: fake.of("POST", "/metrics"), 3)
    (req,) = fake.of("POST", "/metrics")
    assert 1.5 < req.at - t0 < 3.5
    assert sorted(p["key"] for p in req.json()["points"]) == ["epoch", "train_loss", "train_lr"]


def test_batches_hold_at_most_1000_points_on_one_connection(fake, make_run):
    run = make_run(flush_seconds=60)
    t = time.time()
    run.log({f"k{i}": float(i) for i in range(2500)}, step=7)
    run.finish()
    sizes = [len(r.json()["points"]) for r in fake.of("POST", "/metrics")]
    assert sizes == [1000, 1000, 500]
    p = fake.points()[0]
    assert p["key"] == "k0" and p["step"] == 7 and p["value"] == 0.0 and abs(p["wall_time"] - t) < 5
    assert len({r.client for r in fake.requests}) == 1, "one keep-alive connection"
    assert fake.of("POST", "/finish")[0].json() == {"status": "succeeded"}


def test_batches_stay_under_1_mib():
    key = "é" * 250  # 500 bytes of UTF-8
    batches = list(proto.metric_lines([(key + str(i), 1, 1.0, 0.0) for i in range(5000)]))
    assert sum(len(b["body"]["points"]) for b in batches) == 5000
    for b in batches:
        assert len(b["body"]["points"]) <= 1000 and len(proto.encode(b["body"])) < 2**20


# ---- retries --------------------------------------------------------------


def test_retries_503_honouring_retry_after(fake, make_run):
    answers = iter([(503, {"Retry-After": "1"}, {"error": "service_unavailable", "reason": "db"})])
    fake.on("POST .*/metrics", lambda r: next(answers, None))
    run = make_run()
    run.log({"train_loss": 0.3}, step=1)
    assert run.flush(10)
    first, second = fake.of("POST", "/metrics")
    assert second.at - first.at >= 0.9, "Retry-After: 1 waited for (the policy alone waits <= 0.05 s)"
    assert first.body == second.body and not run.spool_path.exists()


def test_422_is_not_retried_and_the_batch_dropped(fake, make_run, caplog):
    answers = iter(
        [
            (
                422,
                {},
                {
                    "error": "unprocessable_entity",
                    "field": "points[0].value",
                    "reason": "must be a finite number",
                },
            )
        ]
    )
    fake.on("POST .*/metrics", lambda r: next(answers, None))
    run = make_run()
    with caplog.at_level(logging.WARNING, logger="maelab"):
        run.log({"train_loss": 0.3}, step=1)
        run.flush(5)
    assert len(fake.of("POST", "/metrics")) == 1
    assert "points[0].value" in caplog.text and "must be a finite number" in caplog.text
    run.log({"train_loss": 0.2}, step=2)
    run.flush(5)
    assert len(fake.of("POST", "/metrics")) == 2 and [p["step"] for p in fake.points()] == [2]
    assert not run.spool_path.exists()


# ---- validation -----------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "0.5", None, True, 10**400, [1.0]])
def test_bad_values_are_refused_in_the_caller(fake, make_run, value):
    run = make_run()
    with pytest.raises(ValueError, match="'test_acc1'"):
        run.log({"train_loss": 1.0, "test_acc1": value}, step=3)
    run.flush(5)
    assert fake.of("POST", "/metrics") == [], "nothing of a refused call is queued"


@pytest.mark.parametrize("key", ["", "k" * 251, "bad\nkey", "tab\tkey", 3, None])
def test_bad_keys_are_refused(make_run, key):
    with pytest.raises(ValueError, match="key"):
        make_run().log({key: 1.0}, step=0)


@pytest.mark.parametrize("step", [-1, 1.5, True, 2**53 + 1, "3", None])
def test_bad_steps_are_refused(make_run, step):
    with pytest.raises(ValueError, match="step"):
        make_run().log({"train_loss": 1.0}, step=step)


def test_ints_and_number_like_values_are_accepted(fake, make_run):
    class Scalar:  # like a numpy scalar or a one-element tensor
        def item(self):
            return 0.25

    run = make_run()
    run.log({"n_parameters": 111_000_000, "test_acc1": Scalar(), "k" * 250: -1e300}, step=2**53)
    run.flush(5)
    assert sorted(p["value"] for p in fake.points()) == [-1e300, 0.25, 111_000_000]


def test_log_after_finish_raises(make_run):
    run = make_run()
    run.finish()
    with pytest.raises(RuntimeError):
        run.log({"train_loss": 1.0}, step=0)


# ---- images, heartbeat, finish --------------------------------------------


def test_log_image_uploads_with_sha256(fake, make_run, tmp_path):
    run = make_run()
    run.log_image("recon", PNG, step=3)
    (tmp_path / "r.png").write_bytes(PNG)
    run.log_image("other-0001.png", tmp_path / "r.png", step=1)
    run.flush(5)
    a, b = fake.of("PUT", ".png")
    assert a.path.endswith("/artifacts/recon-0003.png") and b.path.endswith("/artifacts/other-0001.png")
    sha = hashlib.sha256(PNG).hexdigest()
    assert a.query == {"kind": "reconstruction", "epoch": "3", "sha256": sha}
    assert a.body == PNG and a.headers["content-type"] == "image/png"
    with pytest.raises(ValueError, match="artifact name"):
        run.log_image("-bad name", PNG, step=1)


def test_heartbeat_when_idle(fake, make_run):
    make_run(heartbeat_seconds=0.3)
    assert fake.wait_for(lambda: fake.of("POST", "/heartbeat"), 3)
    assert fake.of("POST", "/metrics") == []


def test_context_manager_finishes_failed_on_exception(fake, make_run):
    with pytest.raises(ZeroDivisionError):
        with make_run() as run:
            run.log({"train_loss": 1.0}, step=0)
            raise ZeroDivisionError("division by zero")
    (fin,) = fake.of("POST", "/finish")
    assert fin.json()["status"] == "failed" and "ZeroDivisionError" in fin.json()["reason"]
    assert fake.points()[0]["key"] == "train_loss", "flushed before the finish"
    assert fake.requests[-1].path.endswith("/finish")


# ---- offline: spool, recovery, sync ---------------------------------------


def test_offline_spool_then_sync_uploads_and_deletes(spool, caplog):
    down = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING, logger="maelab"):
        run = maelab.init("offline", url=down, token="t0k", spool_dir=spool, retry=FAST)
    assert run.id is None and "offline" in caplog.text
    for epoch in range(3):
        run.log({"train_loss": 1.0 / (epoch + 1), "train_lr": 1e-4}, step=epoch)
    run.log_image("recon", PNG, step=2)
    run.finish()
    path = spool / f"{run.client_run_id}.jsonl"
    kinds = [line["type"] for line in lines_of(path)]
    assert kinds[0] == "create" and kinds[-1] == "finish" and "artifact" in kinds
    backup = path.read_bytes()

    fake, server = start_fake()
    try:
        out: list = []
        assert maelab.sync_dir(spool, url=fake.url, token="t0k", out=out.append) == 0
        assert not path.exists(), out
        assert "(6 points), 1 artifacts, finished succeeded" in out[0] and out[0].endswith("deleted")
        assert fake.of("POST", "/runs/external")[0].json()["client_run_id"] == run.client_run_id
        assert sorted((p["step"], p["key"]) for p in fake.points())[0] == (0, "train_loss")
        assert len(fake.points()) == 6 and fake.of("PUT", "/recon-0002.png")[0].body == PNG
        assert fake.of("POST", "/finish")[0].json() == {"status": "succeeded"}

        # Again: nothing left, nothing sent. And a re-synced copy creates no second run.
        n = len(fake.requests)
        assert maelab.sync_dir(spool, url=fake.url, token="t0k", out=out.append) == 0
        assert len(fake.requests) == n and "nothing to sync" in out[-1]
        path.write_bytes(backup)  # as if a sync was killed before deleting the file
        assert maelab.sync_dir(spool, url=fake.url, token="t0k", out=out.append) == 0
        assert len(fake.runs) == 1 and not path.exists()
        assert "finished succeeded already; nothing sent" in out[-1]
        assert fake.requests[-1].path.endswith("/runs/external")
    finally:
        stop_fake(fake, server)


def test_sync_cli_keeps_files_it_cannot_upload_and_exits_nonzero(spool):
    down = f"http://127.0.0.1:{free_port()}"
    run = maelab.init("offline", url=down, token="t0k", spool_dir=spool, retry=FAST)
    run.log({"train_loss": 1.0}, step=0)
    run.finish("failed", "diverged")
    path = spool / f"{run.client_run_id}.jsonl"
    env = {**os.environ, "PYTHONPATH": str(CLIENT_DIR), "MAELAB_TOKEN": "t0k", "MAELAB_URL": down}
    cli = [sys.executable, "-m", "maelab", "sync", str(spool), "--attempts", "2"]
    r = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "FAILED" in r.stdout and path.exists()

    fake, server = start_fake()
    try:
        r = subprocess.run(
            cli, env={**env, "MAELAB_URL": fake.url}, capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "finished failed" in r.stdout and not path.exists()
        assert fake.of("POST", "/finish")[0].json() == {"status": "failed", "reason": "diverged"}
    finally:
        stop_fake(fake, server)


def test_sync_finishes_orphans_and_skips_live_files(fake, spool):
    live = maelab.init(
        "live",
        url=f"http://127.0.0.1:{free_port()}",
        token="t0k",
        spool_dir=spool,
        retry=FAST,
        probe_seconds=3600,
    )
    live.log({"train_loss": 1.0}, step=0)
    live.flush(5)
    out: list = []
    assert maelab.sync_dir(spool, url=fake.url, token="t0k", out=out.append) == 0
    assert "in use" in out[0] and fake.requests == []
    # A writer that died without finishing: its file is unlocked and has no finish line.
    orphan = spool / "orphan.jsonl"
    lines = [ln for ln in live.spool_path.read_text().splitlines() if '"finish"' not in ln]
    orphan.write_text("\n".join(lines).replace(live.client_run_id, "orphan") + '\n{"type": "metr')
    assert maelab.sync_dir(spool, url=fake.url, token="t0k", out=out.append) == 0
    assert not orphan.exists() and "line 3 unreadable (cut off)" in out[-1], out
    assert fake.of("POST", "/finish")[0].json()["status"] == "failed"
    live.finish(timeout=5)


def test_back_online_replays_the_spool(fake, make_run):
    down = {"on": True}
    fake.on("POST .*/metrics", lambda r: (503, {}, {"reason": "down"}) if down["on"] else None)
    run = make_run(probe_seconds=0.2)
    run.log({"train_loss": 1.0}, step=0)
    run.flush(5)
    assert run.spool_path.exists()
    down["on"] = False
    time.sleep(0.3)
    run.log({"train_loss": 0.5}, step=1)
    run.finish()
    assert not run.spool_path.exists()
    assert sorted(p["step"] for p in fake.points()) == [0, 1]
    assert fake.requests[-1].path.endswith("/finish") and len(fake.runs) == 1


# ---- exit -----------------------------------------------------------------


def _script(body: str, tmp_path: Path) -> Path:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(body))
    return script


def _python(script: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(CLIENT_DIR)}
    return subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_exit_flush_is_bounded_when_the_server_hangs(fake, spool, tmp_path):
    fake.hang("POST .*/metrics")
    script = _script(
        f"""
        import maelab
        run = maelab.init("hang", url={fake.url!r}, token="t", spool_dir={str(spool)!r}, exit_timeout=1.0)
        for i in range(10):
            run.log({{"train_loss": 1.0 / (i + 1)}}, step=i)
        print("trained", flush=True)
    """,
        tmp_path,
    )
    t0 = time.monotonic()
    r = _python(script, timeout=30)
    took = time.monotonic() - t0
    assert r.returncode == 0 and "trained" in r.stdout, r.stderr
    assert took < 6, f"exit took {took:.1f} s with exit_timeout=1.0"
    (path,) = spool.glob("*.jsonl")
    lines = lines_of(path)
    assert lines[0]["type"] == "create" and lines[-1] == {"type": "finish", "body": {"status": "succeeded"}}
    assert sum(len(ln["body"]["points"]) for ln in lines if ln["type"] == "metrics") == 10
    assert "maelab sync" in r.stderr


def test_exit_finishes_the_run_succeeded_or_failed(fake, spool, tmp_path):
    ok = _script(
        f"""
        import maelab
        run = maelab.init("ok", url={fake.url!r}, token="t", spool_dir={str(spool)!r})
        run.log({{"train_loss": 1.0}}, step=0)
    """,
        tmp_path,
    )
    assert _python(ok, timeout=30).returncode == 0
    bad = _script(
        f"""
        import maelab
        run = maelab.init("bad", url={fake.url!r}, token="t", spool_dir={str(spool)!r})
        run.log({{"train_loss": 1.0}}, step=0)
        raise RuntimeError("CUDA out of memory")
    """,
        tmp_path,
    )
    r = _python(bad, timeout=30)
    assert r.returncode == 1 and "CUDA out of memory" in r.stderr, "the traceback is still printed"
    first, second = (f.json() for f in fake.of("POST", "/finish"))
    assert first == {"status": "succeeded"}
    assert second["status"] == "failed" and second["reason"] == "RuntimeError: CUDA out of memory"
    assert len(fake.points()) == 2 and not list(spool.glob("*.jsonl"))
