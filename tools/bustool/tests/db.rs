//! The database layer on the backend under test (SQLite by default, PostgreSQL with
//! `SB_TEST_DB=postgres`).

use shared::testing::TestDb;

#[tokio::test]
async fn migrations_apply_twice_and_concurrently_without_error() {
    let t = TestDb::new().await;
    // Several services starting at once.
    let others: Vec<_> = (0..3)
        .map(|_| shared::db::Db::connect_lazy(&shared::config::Dsn::new(t.url.clone())).unwrap())
        .collect();
    let mut set = tokio::task::JoinSet::new();
    for d in &others {
        let d = d.clone();
        set.spawn(async move { d.migrate().await });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    t.db.migrate().await.unwrap();
    t.db.migrate().await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(t.db.pool())
        .await
        .unwrap();
    assert_eq!(applied, 1);
    for d in others {
        d.close().await;
    }
    t.cleanup().await;
}

#[tokio::test]
async fn the_design_tables_round_trip_on_this_backend() {
    let t = TestDb::new().await;
    t.db.migrate().await.unwrap();
    let pool = t.db.pool();
    sqlx::query("INSERT INTO contacts (id, role, allowed, created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $4)")
        .bind("c1")
        .bind("admin")
        .bind(1_i64)
        .bind(1_764_000_000_000_i64)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO contact_identities (kind, value, contact_id, created_at_ms) VALUES ($1, $2, $3, $4)")
        .bind("phone")
        .bind("+15550001111")
        .bind("c1")
        .bind(0_i64)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO outbox (inbound_message_id, contact_id, events, created_at_ms) VALUES ($1, $2, $3, $4)")
        .bind("m1")
        .bind("c1")
        .bind(vec![0_u8, 1, 2, 255])
        .bind(5_i64)
        .execute(pool)
        .await
        .unwrap();
    let (events,): (Vec<u8>,) =
        sqlx::query_as("SELECT events FROM outbox WHERE inbound_message_id = $1")
            .bind("m1")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(events, vec![0, 1, 2, 255]);
    // An identity of an unknown contact is refused (foreign keys are on).
    let orphan = sqlx::query("INSERT INTO contact_identities (kind, value, contact_id, created_at_ms) VALUES ($1, $2, $3, $4)")
        .bind("phone")
        .bind("+15550002222")
        .bind("nobody")
        .bind(0_i64)
        .execute(pool)
        .await;
    assert!(orphan.is_err());
    // Deleting a contact removes its identities.
    sqlx::query("DELETE FROM contacts WHERE id = $1")
        .bind("c1")
        .execute(pool)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM contact_identities")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    t.cleanup().await;
}
