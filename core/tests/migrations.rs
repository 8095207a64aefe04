//! The schema applies to an empty database, a second run changes nothing, and
//! its constraints keep bad states out.

use maelab_core::db::{self, testing::TestDb};

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_are_idempotent() {
    let db = TestDb::empty().await.expect("test database");
    db::migrate(&db.pool).await.expect("first migration");
    let schema = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, String>(
            "select string_agg(table_name || '.' || column_name || ':' || data_type, ',' order by table_name, column_name) \
             from information_schema.columns where table_schema = 'public'",
        )
        .fetch_one(&pool)
        .await
        .expect("schema")
    };
    let before = schema(db.pool.clone()).await;
    for table in [
        "run",
        "job",
        "worker",
        "epoch_metric",
        "step_metric",
        "artifact",
        "api_token",
    ] {
        assert!(
            before.contains(&format!("{table}.")),
            "table {table} missing"
        );
    }
    db::migrate(&db.pool).await.expect("second migration");
    assert_eq!(schema(db.pool.clone()).await, before);
    let applied: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(applied as usize, db::MIGRATOR.iter().count());
}

#[tokio::test]
async fn constraints_reject_impossible_states() {
    let db = TestDb::new().await.expect("test database");
    let run_id: uuid::Uuid = sqlx::query_scalar(
        "insert into run (name, kind, model, preset, config, epochs_total) \
         values ('r', 'pretrain', 'mae', 'vit-micro/4', '{}', 2) returning run_id",
    )
    .fetch_one(&db.pool)
    .await
    .expect("insert run");

    // A status outside the enum.
    assert!(
        sqlx::query("update run set status = 'exploded' where run_id = $1")
            .bind(run_id)
            .execute(&db.pool)
            .await
            .is_err()
    );
    // A finished run without a finish time.
    assert!(
        sqlx::query("update run set status = 'succeeded' where run_id = $1")
            .bind(run_id)
            .execute(&db.pool)
            .await
            .is_err()
    );
    // A pretrain run with a parent.
    assert!(
        sqlx::query("update run set parent_run_id = run_id where run_id = $1")
            .bind(run_id)
            .execute(&db.pool)
            .await
            .is_err()
    );
    // A running job without a worker or lease.
    assert!(
        sqlx::query("insert into job (run_id, state) values ($1, 'running')")
            .bind(run_id)
            .execute(&db.pool)
            .await
            .is_err()
    );
    // Two epoch rows for one epoch.
    let epoch = "insert into epoch_metric (run_id, epoch, train_lr, train_loss, epoch_seconds) values ($1, 0, 0.1, 1.0, 3.0)";
    sqlx::query(epoch)
        .bind(run_id)
        .execute(&db.pool)
        .await
        .expect("first epoch row");
    assert!(
        sqlx::query(epoch)
            .bind(run_id)
            .execute(&db.pool)
            .await
            .is_err()
    );
    // An artifact name that climbs out of its folder.
    assert!(
        sqlx::query(
            "insert into artifact (run_id, kind, name, media_type, bytes, sha256, size_bytes) \
         values ($1, 'log', '../etc/passwd', 'text/plain', '', repeat('0', 64), 0)"
        )
        .bind(run_id)
        .execute(&db.pool)
        .await
        .is_err()
    );
    // Metrics of a run that does not exist.
    assert!(
        sqlx::query(epoch)
            .bind(uuid::Uuid::new_v4())
            .execute(&db.pool)
            .await
            .is_err()
    );
}
