//! The artifact store (core/src/artifact_store) on its own and with the
//! database: each store-level body runs against a local folder; the S3
//! variants run the same bodies against a fresh bucket of the test S3 server.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use maelab_core::RunConfig;
use maelab_core::artifact_store::testing::TempStore;
use maelab_core::artifact_store::{ArtifactStore, StoreError, gc, key, migrate};
use maelab_core::db::artifacts::{self, ArtifactBody, NewStoredArtifact};
use maelab_core::db::metrics::{self, EpochRecord};
use maelab_core::db::queue;
use maelab_core::db::testing::TestDb;
use uuid::Uuid;

/// `len` bytes that differ from chunk to chunk (a flipped byte shows).
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// `data` as a body of `chunk`-byte pieces, like a request body.
fn body(
    data: &[u8],
    chunk: usize,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + use<> {
    let pieces: Vec<_> = data
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(pieces)
}

async fn collect(store: &ArtifactStore, key: &str, range: Option<std::ops::Range<u64>>) -> Vec<u8> {
    let (_, mut s) = store.get_stream(key, range).await.expect("get");
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    out
}

// ---- bodies shared by the backends ----

/// A small and a multipart-sized object go in streamed and come back whole,
/// by range and verified; the sha256 and size are computed on the way.
async fn round_trip(store: &ArtifactStore) {
    let run = Uuid::new_v4();
    for len in [0usize, 1000, 20 * 1024 * 1024 + 123] {
        let data = pattern(len);
        // A short name: s3s-fs (the test S3 server) keeps a multipart
        // upload's metadata in a file named after the base64 of bucket and
        // key, which passes 255 bytes for keys over about 90 characters.
        let k = key::new_key(run, "w.bin").expect("key");
        let stored = store
            .put_stream(&k, body(&data, 64 * 1024), None, None)
            .await
            .expect("put");
        assert_eq!(stored.size, len as u64);
        assert_eq!(stored.sha256, artifacts::sha256_hex(&data));
        assert_eq!(collect(store, &k, None).await, data, "{len} bytes whole");
        if len > 10 {
            let r = 3..(len as u64 - 2);
            assert_eq!(collect(store, &k, Some(r.clone())).await, &data[3..len - 2]);
        }
        let mut verified = store
            .verified_stream(&k, &stored.sha256)
            .await
            .expect("verified");
        let mut back = Vec::new();
        while let Some(chunk) = verified.next().await {
            back.extend_from_slice(&chunk.expect("verified chunk"));
        }
        assert_eq!(back, data);
        assert_eq!(
            store.verify(&k, &stored.sha256).await.expect("verify"),
            len as u64
        );
        store.delete(&k).await.expect("delete");
        store.delete(&k).await.expect("a second delete is fine");
        assert!(matches!(
            store.get_stream(&k, None).await,
            Err(StoreError::NotFound { .. })
        ));
    }
}

/// A body that does not hash to the declared sha256, or grows past the
/// limit, stores nothing (small and multipart).
async fn refused_uploads_store_nothing(store: &ArtifactStore) {
    let run = Uuid::new_v4();
    for len in [100usize, 9 * 1024 * 1024] {
        let data = pattern(len);
        let k = key::new_key(run, "up.bin").expect("key");
        let wrong = artifacts::sha256_hex(b"something else");
        let e = store
            .put_stream(&k, body(&data, 1 << 20), Some(&wrong), None)
            .await
            .expect_err("mismatch");
        assert!(matches!(e, StoreError::DigestMismatch { .. }), "{e}");
        assert!(matches!(
            store.get_stream(&k, None).await,
            Err(StoreError::NotFound { .. })
        ));
        let e = store
            .put_stream(&k, body(&data, 1 << 20), None, Some(len as u64 - 1))
            .await
            .expect_err("too large");
        assert!(matches!(e, StoreError::TooLarge { .. }), "{e}");
        assert!(matches!(
            store.get_stream(&k, None).await,
            Err(StoreError::NotFound { .. })
        ));
    }
}

/// Keys that could leave their folder are refused by every operation.
async fn traversal_refused(store: &ArtifactStore) {
    for bad in [
        "../escape",
        "runs/../../etc/passwd",
        "/abs",
        "runs//x",
        "runs/x/..",
    ] {
        assert!(
            matches!(
                store.put_bytes(bad, b"x".to_vec()).await,
                Err(StoreError::BadKey { .. })
            ),
            "{bad}"
        );
        assert!(
            matches!(
                store.get_stream(bad, None).await,
                Err(StoreError::BadKey { .. })
            ),
            "{bad}"
        );
        assert!(
            matches!(store.delete(bad).await, Err(StoreError::BadKey { .. })),
            "{bad}"
        );
    }
    store
        .probe()
        .await
        .expect("a working store passes the probe");
}

#[tokio::test]
async fn local_round_trip() {
    round_trip(&TempStore::new().expect("store")).await;
}

#[tokio::test]
async fn local_refused_uploads_store_nothing() {
    refused_uploads_store_nothing(&TempStore::new().expect("store")).await;
}

#[tokio::test]
async fn local_traversal_refused() {
    traversal_refused(&TempStore::new().expect("store")).await;
}

/// A store in a fresh bucket of the test S3 server (`MAELAB_TEST_S3`, set by
/// scripts/test; without it these fail naming scripts/test-s3).
async fn s3_store() -> (maelab_core::s3_testing::TestBucket, ArtifactStore) {
    let bucket = maelab_core::s3_testing::fresh_bucket()
        .await
        .expect("a test bucket");
    let store = ArtifactStore::open(&bucket.url(), &bucket.options()).expect("open the bucket");
    (bucket, store)
}

#[tokio::test]
async fn s3_round_trip() {
    let (_bucket, store) = s3_store().await;
    round_trip(&store).await;
}

#[tokio::test]
async fn s3_refused_uploads_store_nothing() {
    let (_bucket, store) = s3_store().await;
    refused_uploads_store_nothing(&store).await;
}

#[tokio::test]
async fn s3_traversal_refused() {
    let (_bucket, store) = s3_store().await;
    traversal_refused(&store).await;
}

#[tokio::test]
async fn s3_probe_fails_naming_the_url_with_bad_credentials_or_unreachable() {
    let (bucket, _) = s3_store().await;
    let mut wrong = bucket.options();
    for (k, v) in &mut wrong {
        if k.eq_ignore_ascii_case("aws_secret_access_key") {
            *v = "not-the-secret".into();
        }
    }
    let store = ArtifactStore::open(&bucket.url(), &wrong).expect("open");
    let e = store.probe().await.expect_err("refused credentials");
    assert!(e.to_string().contains(&bucket.url()), "{e}");
    // Nobody listens there: unreachable, refused at start with the URL.
    let mut nowhere = bucket.options();
    for (k, v) in &mut nowhere {
        if k.eq_ignore_ascii_case("aws_endpoint_url") {
            *v = "http://127.0.0.1:9".into();
        }
    }
    let store = ArtifactStore::open(&bucket.url(), &nowhere).expect("open");
    let e = store.probe().await.expect_err("unreachable");
    assert!(e.to_string().contains(&bucket.url()), "{e}");
}

// ---- local-only faults ----

#[tokio::test]
async fn a_flipped_byte_is_never_served_whole_nor_downloaded() {
    let store = TempStore::new().expect("store");
    let data = pattern(3 * 1024 * 1024 + 7);
    let k = key::new_key(Uuid::new_v4(), "w.safetensors").expect("key");
    let stored = store.put_bytes(&k, data.clone()).await.expect("put");
    let path = store.local_path(&k).expect("local path");
    let mut on_disk = std::fs::read(&path).expect("read");
    on_disk[12345] ^= 0x01;
    std::fs::write(&path, &on_disk).expect("flip");

    let mut s = store
        .verified_stream(&k, &stored.sha256)
        .await
        .expect("open");
    let mut served = 0usize;
    let mut error = None;
    while let Some(chunk) = s.next().await {
        match chunk {
            Ok(c) => served += c.len(),
            Err(e) => error = Some(e),
        }
    }
    assert!(served < data.len(), "the last chunk is held back");
    assert!(
        matches!(error, Some(StoreError::Corrupt { .. })),
        "{error:?}"
    );
    assert!(matches!(
        store.verify(&k, &stored.sha256).await,
        Err(StoreError::Corrupt { .. })
    ));
    let target = store.dir.join("download.bin");
    let e = store
        .download_to_file(&k, &stored.sha256, &target)
        .await
        .expect_err("corrupt");
    assert!(e.to_string().contains("corrupt"), "{e}");
    assert!(!target.exists(), "no corrupt file is left behind");
}

#[tokio::test]
async fn the_probe_fails_naming_the_url_when_the_folder_is_not_writable() {
    let store = TempStore::new().expect("store");
    // The folder turns into a file: nothing can be written under it (root
    // ignores permission bits, not this).
    let url = store.url().to_string();
    std::fs::remove_dir_all(&store.dir).expect("remove");
    std::fs::write(&store.dir, b"not a folder").expect("file");
    let e = store.probe().await.expect_err("unwritable");
    std::fs::remove_file(&store.dir).expect("clean");
    assert!(matches!(e, StoreError::Probe { .. }), "{e}");
    assert!(e.to_string().contains(&url), "{e}");
    // A store under a file cannot even be opened.
    let file = std::env::temp_dir().join(format!("maelab-file-{}", Uuid::new_v4()));
    std::fs::write(&file, b"x").expect("file");
    let under = file.join("artifacts").display().to_string();
    let e = ArtifactStore::open(&under, &[]).expect_err("under a file");
    std::fs::remove_file(&file).expect("clean");
    assert!(e.to_string().contains(&under), "{e}");
}

// ---- with the database ----

async fn claimed(db: &TestDb, config: &str) -> (Uuid, queue::ClaimedJob) {
    let config = RunConfig::from_toml_str(config).expect("config");
    db.claimed_run(&config, Duration::from_secs(30))
        .await
        .expect("claimed run")
}

fn row(epoch: i32) -> EpochRecord {
    EpochRecord {
        epoch,
        train_lr: 1e-4,
        train_loss: 1.0,
        test_loss: None,
        test_acc1: None,
        test_acc5: None,
        n_parameters: Some(1),
        psnr: None,
        hf_ratio: None,
        epoch_seconds: 0.1,
        images_per_second: Some(1.0),
        extra: serde_json::json!({}),
    }
}

#[tokio::test]
async fn retention_of_the_runs_config_deletes_objects_too() {
    let db = TestDb::new().await.expect("db");
    let store = TempStore::new().expect("store");
    let (run_id, job) = claimed(
        &db,
        "kind = 'pretrain'\nepochs = 10\nwarmup_epochs = 0\ncheckpoint_keep_every = 3",
    )
    .await;
    for epoch in 0..8 {
        let name = format!("checkpoint-e{epoch:04}.safetensors");
        let k = key::new_key(run_id, &name).expect("key");
        let object = store
            .put_bytes(&k, format!("weights {epoch}").into_bytes())
            .await
            .expect("put");
        metrics::record_epoch_with_checkpoint(
            &db.pool,
            &job.lease,
            &row(epoch),
            10,
            &[NewStoredArtifact {
                kind: "checkpoint",
                epoch: Some(epoch),
                name: &name,
                media_type: "application/octet-stream",
                object: &object,
            }],
        )
        .await
        .expect("record");
        gc::sweep(&db.pool, &store).await.expect("sweep");
    }
    let kept: Vec<i32> = sqlx::query_scalar("select epoch from artifact order by epoch")
        .fetch_all(&db.pool)
        .await
        .expect("kept");
    assert_eq!(
        kept,
        vec![2, 5, 7],
        "every 3rd (0-based 2, 5) and the newest"
    );
    assert_eq!(store.object_count(), 3, "deleted rows' objects are gone");
    let left: i64 = sqlx::query_scalar("select count(*) from artifact_orphan")
        .fetch_one(&db.pool)
        .await
        .expect("orphans");
    assert_eq!(left, 0);
    // Every row's object is there and hashes right.
    for a in artifacts::checkpoint_files(&db.pool, run_id, 5)
        .await
        .expect("files")
    {
        let ArtifactBody::Stored { key } = &a.body else {
            panic!("stored");
        };
        store.verify(key, &a.sha256).await.expect("verified");
    }
}

#[tokio::test]
async fn a_replaced_artifacts_object_is_deleted_after_the_commit() {
    let db = TestDb::new().await.expect("db");
    let store = TempStore::new().expect("store");
    let (run_id, job) = claimed(&db, "kind = 'pretrain'\nepochs = 2\nwarmup_epochs = 0").await;
    let mut keys = Vec::new();
    for round in 0..2 {
        let k = key::new_key(run_id, "recon-0000.png").expect("key");
        let object = store.put_bytes(&k, vec![round; 10]).await.expect("put");
        artifacts::put_artifact(
            &db.pool,
            &job.lease,
            &NewStoredArtifact {
                kind: "reconstruction",
                epoch: Some(0),
                name: "recon-0000.png",
                media_type: "image/png",
                object: &object,
            },
        )
        .await
        .expect("row");
        keys.push(k);
    }
    let orphans = artifacts::orphan_keys(&db.pool, 10).await.expect("orphans");
    assert_eq!(
        orphans,
        vec![keys[0].clone()],
        "the replaced object is recorded"
    );
    assert_eq!(gc::sweep(&db.pool, &store).await.expect("sweep"), 1);
    assert!(matches!(
        store.get_stream(&keys[0], None).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(collect(&store, &keys[1], None).await, vec![1u8; 10]);
}

#[tokio::test]
async fn legacy_rows_are_read_in_place_then_moved_resumably_and_idempotently() {
    let db = TestDb::new().await.expect("db");
    let store = TempStore::new().expect("store");
    let (run_id, job) = claimed(&db, "kind = 'pretrain'\nepochs = 5\nwarmup_epochs = 0").await;
    let contents = db
        .inline_reconstructions(&job.lease, 5, 1000)
        .await
        .expect("legacy rows");
    // One row's bytes rotted in the database: it is reported, left in place.
    sqlx::query("update artifact set bytes = 'rot' where name = 'recon-0004.png'")
        .execute(&db.pool)
        .await
        .expect("rot");
    // Read in place before any move.
    let id: i64 =
        sqlx::query_scalar("select artifact_id from artifact where name = 'recon-0001.png'")
            .fetch_one(&db.pool)
            .await
            .expect("id");
    let a = artifacts::get_artifact(&db.pool, id).await.expect("inline");
    assert_eq!(a.body, ArtifactBody::Inline(contents[1].clone()));

    // A pass cut short (a crash after two rows)...
    let first = migrate::move_inline(&db.pool, &store, 1, Some(2))
        .await
        .expect("partial");
    assert_eq!((first.moved, first.left), (2, 3));
    // ...then resumed, then run again: nothing moves twice.
    let second = migrate::move_inline(&db.pool, &store, 2, None)
        .await
        .expect("rest");
    assert_eq!((second.moved, second.corrupt, second.left), (2, 1, 1));
    let third = migrate::move_inline(&db.pool, &store, 2, None)
        .await
        .expect("again");
    assert_eq!((third.moved, third.corrupt, third.left), (0, 1, 1));

    assert_eq!(store.object_count(), 4);
    for (i, bytes) in contents.iter().enumerate().take(4) {
        let (key, sha): (Option<String>, String) = sqlx::query_as(
            "select store_key, sha256 from artifact where name = $1 and bytes is null",
        )
        .bind(format!("recon-{i:04}.png"))
        .fetch_one(&db.pool)
        .await
        .expect("moved row");
        let key = key.expect("store key");
        assert_eq!(collect(&store, &key, None).await, *bytes);
        store.verify(&key, &sha).await.expect("verified");
    }
    let pending: i64 = sqlx::query_scalar("select count(*) from artifact_orphan")
        .fetch_one(&db.pool)
        .await
        .expect("orphans");
    assert_eq!(pending, 0, "no upload left unaccounted for");
    assert_eq!(run_id, a.run_id);
}
