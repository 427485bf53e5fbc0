//! The brain's group commit on the database under test: a group of messages is written in a
//! few statements, each message once, and a message committed again gets the first events;
//! conversations are marked per group, in order; and what many messages read first is read
//! together, each message its own.

use brain::domain::{AnsweredBy, Author, Direction, Effect, LogKind, Mark, Outcome, Reason, Turn};
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

/// A commit that only marks the contact's conversation at `now_ms`.
fn marked(contact: &str, key: &str, m: Mark, now_ms: i64) -> Commit {
    Commit {
        effects: vec![Effect::Conversation(m)],
        log: Vec::new(),
        now_ms,
        ..commit(contact, key, b"", "")
    }
}

fn mark(answered_by: Option<AnsweredBy>, handoff: Option<Reason>, unanswered: bool) -> Mark {
    Mark {
        answered_by,
        handoff,
        unanswered,
        idle_ms: 1_000,
    }
}

/// (answered_by, handoff, last_unanswered, started, last) of a contact's conversations, oldest
/// first.
async fn conversations(t: &TestDb, contact: &str) -> Vec<(String, Option<String>, i64, i64, i64)> {
    let rows = sqlx::query(
        "SELECT answered_by, handoff, last_unanswered, started_at_ms, last_at_ms \
         FROM conversations WHERE contact_id = $1 ORDER BY id",
    )
    .bind(contact)
    .fetch_all(t.db.pool())
    .await
    .unwrap();
    use sqlx::Row as _;
    rows.iter()
        .map(|r| {
            (
                r.get("answered_by"),
                r.get("handoff"),
                r.get("last_unanswered"),
                r.get("started_at_ms"),
                r.get("last_at_ms"),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_group_marks_each_contact_s_conversation_in_the_order_its_messages_came() {
    let t = TestDb::new().await;
    t.db.migrate().await.unwrap();
    // `a` has an open conversation; `b` has none; `c`'s went quiet longer than the idle time.
    let first = [
        marked(
            "a",
            "a0",
            mark(Some(AnsweredBy::Knowledge), None, false),
            10_000,
        ),
        marked("c", "c0", mark(Some(AnsweredBy::Model), None, false), 7_000),
    ];
    apply(&t, &first.iter().collect::<Vec<_>>()).await;
    let group = [
        marked("a", "a1", mark(None, None, true), 10_100),
        marked("b", "b1", mark(None, Some(Reason::Asked), false), 10_100),
        // `a` twice in one group: marked after its first, in one conversation.
        marked(
            "a",
            "a2",
            mark(Some(AnsweredBy::Model), Some(Reason::Budget), false),
            10_200,
        ),
        marked(
            "c",
            "c1",
            mark(Some(AnsweredBy::Knowledge), None, false),
            10_200,
        ),
        marked(
            "a",
            "a3",
            mark(Some(AnsweredBy::Knowledge), None, true),
            10_300,
        ),
    ];
    apply(&t, &group.iter().collect::<Vec<_>>()).await;
    assert_eq!(
        conversations(&t, "a").await,
        [(
            "model".to_owned(),
            Some("budget".to_owned()),
            1,
            10_000,
            10_300
        )],
        "one conversation; the model wins over the knowledge base; the last message's state"
    );
    assert_eq!(
        conversations(&t, "b").await,
        [(String::new(), Some("asked".to_owned()), 0, 10_100, 10_100)]
    );
    assert_eq!(
        conversations(&t, "c").await,
        [
            ("model".to_owned(), None, 0, 7_000, 7_000),
            ("knowledge".to_owned(), None, 0, 10_200, 10_200),
        ],
        "a message after the idle time starts a new conversation"
    );
}

#[tokio::test]
async fn many_messages_read_together_each_get_their_own_snapshot() {
    let t = TestDb::new().await;
    t.db.migrate().await.unwrap();
    let phone = ("phone".to_owned(), "+15550001111".to_owned());
    let lid = ("lid".to_owned(), "1111@lid".to_owned());
    let both = [phone.clone(), lid.clone()];
    let x = store::resolve(&t.db, &both, 1).await.unwrap().id;
    let other = ("phone".to_owned(), "+15550002222".to_owned());
    let y = store::resolve(&t.db, std::slice::from_ref(&other), 1)
        .await
        .unwrap()
        .id;
    let mut said = commit(&x, "x-said", b"x events", "hello");
    said.day = "2026-12-07".to_owned();
    let answered = commit(&y, "y-answered", b"y events", "hi");
    apply(&t, &[&said, &answered]).await;

    let reader = store::reader(t.db.clone(), 10);
    let ask = |id: &str, identities: &[(String, String)], memory: bool| store::Ask {
        inbound_id: id.to_owned(),
        identities: identities.to_vec(),
        day: "2026-12-07".to_owned(),
        memory,
    };
    let unknown = ("phone".to_owned(), "+15550009999".to_owned());
    let asks = [
        ask("x-new", &both, true),
        ask("x-cmd", std::slice::from_ref(&phone), false),
        ask("x-half", &[phone.clone(), unknown.clone()], true),
        ask("y-answered", std::slice::from_ref(&other), true),
        ask("z-new", std::slice::from_ref(&unknown), true),
        ask("x-said", &[], true),
    ];
    // Forty messages at once, so most of them are read in one statement.
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..40 {
        let reader = reader.clone();
        let a = asks[round % asks.len()].clone();
        tasks.spawn(async move { (round % 6, reader.read(a).await.unwrap()) });
    }
    let mut seen = 0;
    while let Some(done) = tasks.join_next().await {
        let (which, snap) = done.unwrap();
        let contact = snap.contact.as_ref().map(|c| c.id.clone());
        let memory: Vec<String> = snap
            .known
            .memory
            .iter()
            .map(|m| m.content.clone())
            .collect();
        match which {
            0 => {
                assert_eq!(
                    contact.as_deref(),
                    Some(x.as_str()),
                    "both identities are x's"
                );
                assert_eq!(memory, ["hello", "re: hello"]);
                assert!(snap.answered.is_none());
            }
            1 => {
                assert_eq!(contact.as_deref(), Some(x.as_str()));
                assert!(memory.is_empty(), "no memory asked for");
            }
            2 => assert!(contact.is_none(), "one identity is not linked yet"),
            3 => {
                assert_eq!(snap.answered.as_deref(), Some(&b"y events"[..]));
                assert_eq!(contact.as_deref(), Some(y.as_str()));
                assert!(memory.is_empty(), "an answered message reads no memory");
            }
            4 => assert!(contact.is_none() && snap.answered.is_none()),
            _ => {
                assert_eq!(
                    snap.answered.as_deref(),
                    Some(&b"x events"[..]),
                    "no sender"
                );
                assert!(contact.is_none());
            }
        }
        seen += 1;
    }
    assert_eq!(seen, 40);
}
