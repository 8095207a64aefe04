//! `maelab artifacts migrate|gc` as operators run them: the built binary
//! against a database holding artifacts an older maelab stored inline. A
//! pass cut short by `--limit` moves only that many; the next pass moves the
//! rest; a third moves nothing; every moved row's object holds its bytes and
//! `gc` then finds nothing to delete. A store that cannot be opened stops the
//! command naming its URL, and nothing moves.

use std::process::{Command, Output};
use std::time::Duration;

use maelab_core::RunConfig;
use maelab_core::artifact_store::testing::TempStore;
use maelab_core::db::testing::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_maelab");

fn maelab(db: &TestDb, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["artifacts"])
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env_remove("MAELAB_ARTIFACT_STORE")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run maelab")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Three reconstruction images stored inline (bytea), as before the store.
async fn legacy_rows(db: &TestDb) -> Vec<Vec<u8>> {
    let config = RunConfig::from_toml_str("kind = 'pretrain'\nepochs = 3\nwarmup_epochs = 0")
        .expect("config");
    let (_, job) = db
        .claimed_run(&config, Duration::from_secs(30))
        .await
        .expect("claimed run");
    db.inline_reconstructions(&job.lease, 3, 2000)
        .await
        .expect("inline rows")
}

async fn inline_rows(db: &TestDb) -> i64 {
    sqlx::query_scalar("select count(*) from artifact where bytes is not null")
        .fetch_one(&db.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn migrate_moves_inline_rows_resumably_and_gc_finds_nothing_left() {
    let db = TestDb::new().await.expect("db");
    let contents = legacy_rows(&db).await;
    let store = TempStore::new().expect("store");
    let url = store.dir.display().to_string();

    let first = stdout(&maelab(
        &db,
        &["migrate", "--artifact-store", &url, "--limit", "1"],
    ));
    assert!(first.starts_with("moved 1 "), "{first}");
    assert!(first.contains("still inline 2"), "{first}");
    assert_eq!(inline_rows(&db).await, 2);

    let second = stdout(&maelab(&db, &["migrate", "--artifact-store", &url]));
    assert!(second.starts_with("moved 2 "), "{second}");
    assert!(second.contains("still inline 0"), "{second}");
    let third = stdout(&maelab(&db, &["migrate", "--artifact-store", &url]));
    assert!(third.starts_with("moved 0 "), "{third}");
    assert_eq!(inline_rows(&db).await, 0);
    assert_eq!(store.object_count(), 3);

    for (i, bytes) in contents.iter().enumerate() {
        let (key, sha): (String, String) = sqlx::query_as(
            "select store_key, sha256 from artifact where name = $1 and bytes is null",
        )
        .bind(format!("recon-{i:04}.png"))
        .fetch_one(&db.pool)
        .await
        .expect("moved row");
        assert_eq!(
            store.get_bytes(&key).await.expect("object").as_ref(),
            bytes.as_slice()
        );
        store.verify(&key, &sha).await.expect("sha256");
    }

    let gc = stdout(&maelab(&db, &["gc", "--artifact-store", &url]));
    assert!(gc.starts_with("deleted 0 "), "{gc}");
    assert_eq!(store.object_count(), 3);
}

#[tokio::test]
async fn an_unusable_store_stops_migrate_naming_it_and_nothing_moves() {
    let db = TestDb::new().await.expect("db");
    legacy_rows(&db).await;
    // A store "folder" under a regular file cannot be created.
    let file = std::env::temp_dir().join(format!("maelab-not-a-dir-{}", uuid::Uuid::new_v4()));
    std::fs::write(&file, b"x").expect("file");
    let url = file.join("artifacts").display().to_string();
    let out = maelab(&db, &["migrate", "--artifact-store", &url]);
    std::fs::remove_file(&file).expect("clean");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&url), "{err}");
    assert_eq!(inline_rows(&db).await, 3);
}
