//! The owner's loop on the console: the questions the knowledge base did not answer, grouped,
//! and one of them answered for good as an FAQ entry — the next customer who asks it gets
//! that answer with no model call.

use shared::fake_chat::Reply;

use crate::console::{Stack, T, until};

/// `who` (a new customer) asks `question` on the web chat: the reply's text.
async fn answer(s: &Stack, who: &str, question: &str) -> String {
    let (status, _) = s.gw.send_text(who, question).await;
    assert_eq!(status, 202);
    let l = s.gw.wait_listing(who, T, |l| l.len() >= 2).await;
    l.last().unwrap()["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn questions_the_knowledge_base_missed_are_grouped_and_one_click_answers_them_for_good() {
    let s = Stack::start(&[], false).await;
    s.fake
        .otherwise(Reply::Text("Let me check with the shop.".into()));
    let me = s.session().await;
    for (who, q) in [
        ("+15550003001", "Do you sell gift cards?"),
        ("+15550003002", "do you sell gift cards"),
        ("+15550003003", "Can I buy a gift card?"),
        ("+15550003004", "Is parking free near the shop?"),
    ] {
        assert_eq!(answer(&s, who, q).await, "Let me check with the shop.");
    }
    let listed = until("the groups", async || {
        let (status, q) = s.get(&me, "/console/api/questions").await;
        assert_eq!(status, 200, "{q}");
        (q["looked_at"] == 4).then_some(q)
    })
    .await;
    let groups = listed["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{listed}");
    assert_eq!(groups[0]["count"], 3);
    assert_eq!(
        groups[0]["question"], "Can I buy a gift card?",
        "the newest"
    );
    assert_eq!(groups[0]["answered_by"]["model"], 3);
    assert_eq!(groups[1]["question"], "Is parking free near the shop?");

    // A bad entry is refused with its reason, and nothing is written.
    let (status, err) = s
        .post(
            &me,
            "/console/api/questions/faq",
            serde_json::json!({"question": "gift | cards", "answer": "Yes."}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        err["error"].as_str().unwrap().contains("without |"),
        "{err}"
    );

    let (status, added) = s
        .post(
            &me,
            "/console/api/questions/faq",
            serde_json::json!({
                "question": "Do you sell gift cards",
                "also": ["Can I buy a gift card"],
                "answer": "Yes: from £10, in the shop and online."
            }),
        )
        .await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["file"], "faq-console.md");
    assert_eq!(added["faq_entries"], 1);
    let (_, file) = s.get(&me, "/console/api/knowledge/faq-console.md").await;
    assert!(
        file["content"]
            .as_str()
            .unwrap()
            .contains("## Do you sell gift cards?\nAlso: Can I buy a gift card\n"),
        "{file}"
    );

    // The next customer who asks gets the owner's answer, with no model call.
    let calls = s.fake.requests().len();
    let reply = answer(&s, "+15550003005", "do you sell gift cards?").await;
    assert_eq!(reply, "Yes: from £10, in the shop and online.");
    assert_eq!(s.fake.requests().len(), calls, "no model call");
    // The group answered is done: only the parking question is left to answer.
    let (_, q) = s.get(&me, "/console/api/questions").await;
    assert_eq!(q["looked_at"], 5);
    let left: Vec<&str> = q["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["question"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["Is parking free near the shop?"]);

    let (_, audit) = s.get(&me, "/console/api/audit").await;
    let row = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "knowledge.faq")
        .expect("audited");
    assert_eq!(row["target"], "faq-console.md");
    assert!(
        !row["detail"].as_str().unwrap().contains("gift"),
        "no customer's words in the audit log: {row}"
    );
}
