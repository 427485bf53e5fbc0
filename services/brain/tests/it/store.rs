//! The brain's group commit on the database under test: a group of messages is written in a
//! few statements, each message once, and a message committed again gets the first events.

use brain::domain::{Author, Direction, Effect, LogKind, Outcome, Turn};
use brain::store::{self, Commit, LogEntry};
use shared::testing::TestDb;
use sqlx::Connection as _;

fn commit(contact: &str, key: &str, events: &[u8], said: &str) -> Commit {
    Commit {
        contact_id: contact.to_owned(),
        key: key.to_owned(),
        events: events.to_vec(),
        outcome: Outcome::Answered,
        effects: vec![
            Effect::Remember(Turn::customer(said)),
            Effect::Remember(Turn::business(format!("re: {said}"))),
            Effect::Disclose,
        ],
        log: vec![LogEntry {
            direction: Direction::In,
            kind: LogKind::Text,
            content: said.to_owned(),
            author: Author::Customer,
            media: None,
            message_id: key.to_owned(),
            chat: Some((0, "chat".to_owned())),
        }],
        day: "2026-12-07".to_owned(),
        now_ms: 1_000,
    }
}

async fn count(t: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(t.db.pool())
        .await
        .unwrap()
}

async fn apply(t: &TestDb, group: &[&Commit]) -> Vec<Option<Vec<u8>>> {
    let mut conn = t.db.pool().acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let out = store::apply(&mut tx, group).await.unwrap();
    tx.commit().await.unwrap();
    out
}

#[tokio::test]
async fn a_group_writes_each_message_once_and_a_repeat_gets_the_first_events() {
    let t = TestDb::new().await;
    t.db.migrate().await.unwrap();
    let ids = [("phone".to_owned(), "+15550009999".to_owned())];
    let c = store::resolve(&t.db, &ids, 1).await.unwrap().id;
    // 70 messages: more than one statement's rows (64), the same message twice among them.
    let many: Vec<Commit> = (0..70)
        .map(|i| {
            commit(
                &c,
                &format!("m{i}"),
                format!("events {i}").as_bytes(),
                &format!("q{i}"),
            )
        })
        .collect();
    let again = commit(&c, "m3", b"other events", "q3 again");
    let mut group: Vec<&Commit> = many.iter().collect();
    group.insert(10, &again);
    let out = apply(&t, &group).await;
    assert_eq!(out.len(), 71);
    assert_eq!(
        out[10].as_deref(),
        Some(&b"events 3"[..]),
        "the first of the key wins"
    );
    assert_eq!(out.iter().filter(|o| o.is_none()).count(), 70);
    assert_eq!(count(&t, "SELECT COUNT(*) FROM outbox").await, 70);
    assert_eq!(count(&t, "SELECT COUNT(*) FROM conversation_log").await, 70);
    assert_eq!(
        count(
            &t,
            "SELECT CAST(SUM(received) AS BIGINT) FROM daily_messages"
        )
        .await,
        70
    );
    // Memory in the order the messages came, each turn once.
    let turns: Vec<String> =
        sqlx::query_scalar("SELECT content FROM conversation_messages ORDER BY id")
            .fetch_all(t.db.pool())
            .await
            .unwrap();
    let expected: Vec<String> = (0..70)
        .flat_map(|i| [format!("q{i}"), format!("re: q{i}")])
        .collect();
    assert_eq!(turns, expected);
    assert_eq!(
        count(
            &t,
            "SELECT COUNT(*) FROM contacts WHERE disclosed_at_ms IS NOT NULL"
        )
        .await,
        1
    );

    // Delivered again later: the stored events, nothing written.
    let out = apply(&t, &[&many[0], &commit(&c, "m70", b"new", "q70")]).await;
    assert_eq!(out[0].as_deref(), Some(&b"events 0"[..]));
    assert_eq!(out[1], None);
    assert_eq!(
        count(&t, "SELECT COUNT(*) FROM conversation_messages").await,
        142
    );
    assert_eq!(count(&t, "SELECT COUNT(*) FROM conversation_log").await, 71);
}
