//! Admin commands that read and change the database, the memory cleanup, and the apology a
//! customer gets when their message cannot be handled at all.

use std::time::Duration;

use shared::config::Dsn;
use shared::db::Db;
use shared::testing::{eventually, wait_for};

use crate::rig::{ADMIN, Rig, metric};

const USER: &str = "+15552340001";

fn db(rig: &Rig) -> Db {
    Db::connect_lazy(&Dsn::new(&rig.db.url)).unwrap()
}

#[tokio::test]
async fn config_set_changes_the_model_and_prompt_until_unset() {
    let mut rig = Rig::new(&[("ACCESS_MODE", "open")]).await;
    let _p = rig.spawn().await;
    let c = rig.text(ADMIN, "!config set model gpt-4o-mini").await;
    assert!(
        rig.reply(&c)
            .await
            .contains("model is now gpt-4o-mini (was gpt-4o)")
    );
    let c = rig
        .text(ADMIN, "!config set pre-prompt You sell bicycles in Porto.")
        .await;
    rig.reply(&c).await;
    let bad = rig.text(ADMIN, "!config set temperature 7").await;
    assert!(rig.reply(&bad).await.starts_with("Not changed"));
    let m = rig.text(USER, "hello").await;
    rig.reply(&m).await;
    let req = rig.fake.requests().pop().unwrap();
    assert_eq!(req["model"], "gpt-4o-mini");
    let system = req["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.starts_with("You sell bicycles in Porto.\n\n"),
        "the prompt set, then the rules of the handoff marks: {system}"
    );
    let show = rig.text(ADMIN, "!config").await;
    let shown = rig.reply(&show).await;
    assert!(shown.contains("model = gpt-4o-mini (set here)"), "{shown}");
    assert!(
        shown.contains("temperature = (the API's default) (environment)"),
        "{shown}"
    );
    let u = rig.text(ADMIN, "!config unset model").await;
    assert!(
        rig.reply(&u)
            .await
            .contains("back to the environment's value (gpt-4o)")
    );
    let m = rig.text(USER, "again").await;
    rig.reply(&m).await;
    assert_eq!(rig.fake.requests().pop().unwrap()["model"], "gpt-4o");
    // Users cannot touch settings.
    let x = rig.text(USER, "!config set model evil").await;
    assert!(rig.reply(&x).await.contains("for administrators"));
}

async fn role_of(db: &Db, phone: &str) -> String {
    sqlx::query_scalar(
        "SELECT c.role FROM contacts c JOIN contact_identities i ON i.contact_id = c.id \
         WHERE i.kind = 'phone' AND i.value = $1",
    )
    .bind(phone)
    .fetch_one(db.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn a_number_removed_from_admin_numbers_loses_the_role_at_the_next_start() {
    const SECOND: &str = "+15550000002";
    const NAMED: &str = "+15550000003";
    let mut rig = Rig::new(&[("ADMIN_NUMBERS", &format!("{ADMIN},{SECOND}"))]).await;
    let p = rig.spawn().await;
    // An admin makes a third number admin by command.
    let c = rig.text(ADMIN, &format!("!role {NAMED} admin")).await;
    assert!(rig.reply(&c).await.contains("is now admin"));
    let d = db(&rig);
    assert_eq!(role_of(&d, SECOND).await, "admin");
    drop(p);
    rig.set_env("ADMIN_NUMBERS", ADMIN);
    let p = rig.spawn().await;
    // Revoked as the brain starts, before it reads any message.
    let revoked = wait_for(Duration::from_secs(10), async || {
        (role_of(&d, SECOND).await == "user").then_some(())
    })
    .await;
    assert!(revoked.is_some(), "{}", p.log_text());
    assert_eq!(role_of(&d, ADMIN).await, "admin");
    assert_eq!(
        role_of(&d, NAMED).await,
        "admin",
        "a command's role is kept"
    );
    // The revoked number is refused admin commands.
    let x = rig.text(SECOND, "!usage").await;
    assert!(rig.reply(&x).await.contains("for administrators"));
    drop(p);
    d.close().await;
}

#[tokio::test]
async fn usage_stats_and_forget() {
    let mut rig = Rig::new(&[("ACCESS_MODE", "open")]).await;
    let _p = rig.spawn().await;
    let m = rig.text(USER, "What does shipping cost?").await;
    rig.reply(&m).await;
    let contact = rig.usage().await[0].contact_id.clone();
    // The ledger's daily aggregate for that call (the ledger is not running in this test).
    let d = db(&rig);
    let day = shared::usage::Days::utc().day_of(shared::ids::now_ms());
    sqlx::query(
        "INSERT INTO usage_daily (day, contact_id, priced_model, operation, cost_pico_usd, prompt_tokens, \
         completion_tokens, latency_ms, records) VALUES ($1, $2, 'gpt-4o', 'chat', 450000000, 100, 20, 800, 1)",
    )
    .bind(&day)
    .bind(&contact)
    .execute(d.pool())
    .await
    .unwrap();
    let u = rig.text(ADMIN, "!usage today").await;
    let text = rig.reply(&u).await;
    assert!(text.contains("$0.000450"), "{text}");
    assert!(!text.contains("$$"), "one dollar sign per amount: {text}");
    assert!(
        text.contains("100 prompt + 20 completion tokens, 1 call"),
        "{text}"
    );
    assert!(text.contains("Top contacts:\n1. "), "{text}");
    assert!(
        !text.contains(&contact),
        "contact ids are shown hashed: {text}"
    );
    let s = rig.text(ADMIN, "!stats").await;
    let stats = rig.reply(&s).await;
    assert!(
        stats.contains("messages from") && stats.contains("800 ms"),
        "{stats}"
    );

    let f = rig.text(ADMIN, "!forget +1 555 234 0001").await;
    assert!(rig.reply(&f).await.starts_with("Forgotten"));
    let n: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM conversation_messages WHERE contact_id = $1",
    )
    .bind(&contact)
    .fetch_one(d.pool())
    .await
    .unwrap();
    assert_eq!(n, 0);
    let ids: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM contact_identities WHERE contact_id = $1",
    )
    .bind(&contact)
    .fetch_one(d.pool())
    .await
    .unwrap();
    assert_eq!(ids, 0);
    let kept = shared::usage::totals(&d, &day, &day).await.unwrap();
    assert_eq!(kept.prompt_tokens, 100, "usage is kept, unlinked");
    let top = shared::usage::top_contacts(&d, &day, &day, 5)
        .await
        .unwrap();
    assert_eq!(top[0].0, None);
    // The same number starts over as a new contact, with a fresh disclosure.
    let again = rig.text(USER, "hi again").await;
    assert!(
        rig.reply(&again)
            .await
            .starts_with("You're chatting with an AI assistant.")
    );
    d.close().await;
}

#[tokio::test]
async fn the_cleanup_deletes_memory_older_than_the_retention() {
    let mut rig = Rig::new(&[("ACCESS_MODE", "open"), ("MEMORY_TTL_DAYS", "7")]).await;
    // A contact with one old exchange (8 days ago) and one recent (6 days ago).
    let d = db(&rig);
    d.migrate().await.unwrap();
    let now = shared::ids::now_ms();
    let day = 86_400_000i64;
    sqlx::query("INSERT INTO contacts (id, role, allowed, opted_out, created_at_ms, updated_at_ms) VALUES ('c-old', 'user', 1, 0, $1, $1)")
        .bind(now - 9 * day)
        .execute(d.pool())
        .await
        .unwrap();
    sqlx::query("INSERT INTO contact_identities (kind, value, contact_id, created_at_ms) VALUES ('phone', $1, 'c-old', $2)")
        .bind(USER)
        .bind(now - 9 * day)
        .execute(d.pool())
        .await
        .unwrap();
    for (age, content) in [
        (8, "old question"),
        (8, "old answer"),
        (6, "recent question"),
        (6, "recent answer"),
    ] {
        let role = if content.ends_with("answer") {
            "assistant"
        } else {
            "user"
        };
        sqlx::query("INSERT INTO conversation_messages (contact_id, role, content, inbound_message_id, created_at_ms) VALUES ('c-old', $1, $2, 'x', $3)")
            .bind(role)
            .bind(content)
            .bind(now - age * day)
            .execute(d.pool())
            .await
            .unwrap();
        // The console's log is kept as long.
        sqlx::query("INSERT INTO conversation_log (contact_id, direction, kind, content, author, message_id, created_at_ms) VALUES ('c-old', 'in', 'text', $1, 'customer', 'x', $2)")
            .bind(content)
            .bind(now - age * day)
            .execute(d.pool())
            .await
            .unwrap();
    }
    let p = rig.spawn().await; // the cleanup runs at start, then hourly
    let deleted = eventually(
        "the cleanup at start",
        Duration::from_secs(10),
        async || {
            let n = metric(&p, "brain_memory_rows_deleted_total").await;
            (n >= 2.0).then_some(n)
        },
    )
    .await;
    assert_eq!(deleted, 2.0);
    let m = rig.text(USER, "and now?").await;
    rig.reply(&m).await;
    let req = rig.fake.requests().pop().unwrap();
    let contents: Vec<&str> = req["messages"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["recent question", "recent answer", "and now?"]);
    let logged: Vec<String> = sqlx::query_scalar(
        "SELECT content FROM conversation_log WHERE contact_id = 'c-old' AND message_id = 'x' ORDER BY id",
    )
    .fetch_all(d.pool())
    .await
    .unwrap();
    assert_eq!(logged, ["recent question", "recent answer"]);
    d.close().await;
}

#[tokio::test]
async fn a_message_that_keeps_failing_gets_an_apology_and_a_dead_letter() {
    let mut rig = Rig::new(&[("ACCESS_MODE", "open"), ("MAX_DELIVERIES", "2")]).await;
    let _p = rig.spawn().await;
    // The database breaks under the running brain: every attempt fails.
    let d = db(&rig);
    sqlx::query("DROP TABLE outbox")
        .execute(d.pool())
        .await
        .unwrap();
    let m = rig.text(USER, "anyone?").await;
    let r = rig.replies_to(&m).await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(r[0].text.contains("something went wrong"), "{}", r[0].text);
    let dead = eventually("the dead letter", Duration::from_secs(10), async || {
        let dead = rig
            .bus
            .dlq()
            .list(shared::bus::Stream::Inbound, 10)
            .await
            .unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("database"), "{}", dead[0].reason);
    assert!(rig.fake.requests().is_empty());
    d.close().await;
}

/// What the gateway keeps in Redis about `phone` (its web chat history, a media item it sent)
/// and a dead letter about it, written as the gateway and the bus write them.
async fn seed_redis(rig: &Rig, phone: &str, sha: &str) {
    use prost::Message;
    use shared::bus::Stream;
    use shared::proto::{Envelope, Identity, Inbound, Payload, identity};
    let keys = rig.bus.keys();
    let mut c = rig.bus.connection();
    keys.ready(&mut c).await.unwrap();
    let digits = phone.trim_start_matches('+');
    let env = Envelope::new(
        "test",
        Payload::Inbound(Inbound {
            message_id: format!("m-{sha}"),
            chat_id: digits.into(),
            identities: vec![Identity {
                kind: identity::Kind::Phone as i32,
                value: phone.into(),
            }],
            text: "my address is 1 Main St".into(),
            ..Default::default()
        }),
    );
    // A Cloud API webhook that could not be read, naming them by their WhatsApp id.
    let webhook = Envelope::new(
        "test",
        Payload::Webhook(shared::proto::WebhookDelivery {
            body: format!("{{\"from\": \"{digits}\"}}").into_bytes(),
            identities: vec![Identity {
                kind: identity::Kind::CloudWaId as i32,
                value: digits.into(),
            }],
            ..Default::default()
        }),
    );
    let _: () = redis::pipe()
        .cmd("XADD")
        .arg(keys.webchat_history(digits))
        .arg("*")
        .arg("m")
        .arg("{}")
        .ignore()
        .cmd("SET")
        .arg(keys.key(&format!("media:{sha}")))
        .arg("0123456789")
        .ignore()
        .cmd("HSET")
        .arg(keys.key("media:sizes"))
        .arg(sha)
        .arg(10)
        .ignore()
        .cmd("ZADD")
        .arg(keys.key("media:index"))
        .arg(1)
        .arg(sha)
        .ignore()
        .cmd("INCRBY")
        .arg(keys.key("media:total"))
        .arg(10)
        .ignore()
        .cmd("SADD")
        .arg(keys.media_of(phone))
        .arg(sha)
        .ignore()
        .cmd("XADD")
        .arg(keys.dlq(Stream::Inbound))
        .arg("*")
        .arg("e")
        .arg(env.encode_to_vec())
        .arg("dlq_reason")
        .arg("test")
        .ignore()
        .cmd("XADD")
        .arg(keys.dlq(Stream::Webhooks))
        .arg("*")
        .arg("e")
        .arg(webhook.encode_to_vec())
        .arg("dlq_reason")
        .arg("test")
        .ignore()
        .query_async(&mut c)
        .await
        .unwrap();
}

#[tokio::test]
async fn forget_erases_what_redis_holds_about_the_contact() {
    use shared::bus::Stream;
    let mut rig = Rig::new(&[("ACCESS_MODE", "open")]).await;
    let _p = rig.spawn().await;
    let (user, other) = (USER, "+15559990000");
    let m = rig.text(user, "hello").await;
    rig.reply(&m).await;
    seed_redis(&rig, user, "aa11").await;
    seed_redis(&rig, other, "bb22").await;

    let f = rig.text(ADMIN, "!forget +1 555 234 0001").await;
    let text = rig.reply(&f).await;
    assert!(
        text.contains("its web chat history, 1 media item and 2 dead letters"),
        "{text}"
    );
    let keys = rig.bus.keys();
    let mut c = rig.bus.connection();
    let mut exists = Vec::new();
    for k in [
        keys.webchat_history("15552340001"),
        keys.key("media:aa11"),
        keys.media_of(user),
        keys.webchat_history("15559990000"),
        keys.key("media:bb22"),
        keys.media_of(other),
    ] {
        let n: u64 = redis::cmd("EXISTS")
            .arg(k)
            .query_async(&mut c)
            .await
            .unwrap();
        exists.push(n);
    }
    assert_eq!(
        exists,
        [0, 0, 0, 1, 1, 1],
        "the contact's Redis data is erased, another contact's stays"
    );
    let total: u64 = redis::cmd("GET")
        .arg(keys.key("media:total"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(total, 10, "the media store's accounting follows");
    let dead = rig.bus.dlq().list(Stream::Inbound, 10).await.unwrap();
    assert_eq!(
        dead.len(),
        1,
        "only the other contact's dead letter is left"
    );
    let webhooks = rig.bus.dlq().list(Stream::Webhooks, 10).await.unwrap();
    assert_eq!(
        webhooks.len(),
        1,
        "only the other contact's webhook is left"
    );
}
