//! The owner's console against the real services: a gateway (web chat in demo mode, so
//! conversations are phone numbers), the brain (its model played by the fake OpenAI server)
//! and, where costs are asserted, the ledger — all on one Redis prefix and one database.

use std::time::Duration;

use redis::AsyncCommands as _;
use shared::config::ServiceName;
use shared::fake_chat::{FakeChat, Reply};
use shared::testing::{ServiceEnv, ServiceProcess, TestDb};

use crate::helpers::Gw;

pub(crate) const ADMIN: &str = "+15550001111";
const CUSTOMER: &str = "+15550002222";
pub(crate) const T: Duration = Duration::from_secs(20);

pub(crate) struct Stack {
    pub gw: Gw,
    pub fake: FakeChat,
    pub brain: ServiceProcess,
    _ledger: Option<(ServiceEnv, ServiceProcess)>,
    _benv: ServiceEnv,
    pub db: TestDb,
    /// A client that keeps no cookies (each test sets them by hand).
    pub http: reqwest::Client,
}

impl Stack {
    /// Gateway, brain (and the ledger when `ledger`), sharing a prefix and a database.
    pub async fn start(gw_extra: &[(&str, &str)], ledger: bool) -> Self {
        Self::start_with(gw_extra, &[], ledger).await
    }

    /// [`Stack::start`] with `brain_extra` on top of the brain's variables.
    pub async fn start_with(
        gw_extra: &[(&str, &str)],
        brain_extra: &[(&str, &str)],
        ledger: bool,
    ) -> Self {
        let fake = FakeChat::start();
        let db = TestDb::new().await;
        let redis = shared::testing::redis_url();
        let mut benv = ServiceEnv::new(ServiceName::Brain, &redis, Some(&db.url));
        let brain_url = format!("http://{}", benv.http_addr);
        let mut extra = vec![("BRAIN_URL", brain_url.as_str())];
        extra.extend_from_slice(gw_extra);
        let gw = Gw::start(&extra).await;
        benv.use_prefix(gw.prefix());
        for (k, v) in [
            ("OPENAI_BASE_URL", fake.base_url.as_str()),
            ("OPENAI_API_KEY", "sk-test"),
            ("ADMIN_NUMBERS", ADMIN),
            ("ACCESS_MODE", "open"),
            ("AI_DISCLOSURE", ""),
            ("PUBLIC_URL", gw.public.as_str()),
        ]
        .into_iter()
        .chain(brain_extra.iter().copied())
        {
            benv.env.insert(k.into(), v.into());
        }
        let brain = benv
            .spawn_ready(shared::testing::workspace_bin("brain").to_str().unwrap())
            .await;
        let ledger = if ledger {
            let mut lenv = ServiceEnv::new(ServiceName::Ledger, &redis, Some(&db.url));
            lenv.use_prefix(gw.prefix());
            lenv.env.insert("DAILY_BUDGET_USD".into(), "5".into());
            let p = lenv
                .spawn_ready(shared::testing::workspace_bin("ledger").to_str().unwrap())
                .await;
            Some((lenv, p))
        } else {
            None
        };
        Self {
            gw,
            fake,
            brain,
            _ledger: ledger,
            _benv: benv,
            db,
            http: shared::http_client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gw.public)
    }

    /// The admin asks for a link on the web chat and gets it back.
    pub async fn link(&self) -> String {
        self.link_for(ADMIN).await
    }

    /// The admin `number` asks for a link on the web chat and gets it back.
    pub async fn link_for(&self, number: &str) -> String {
        let links = |l: &[serde_json::Value]| -> Vec<String> {
            l.iter()
                .filter_map(|m| m["text"].as_str())
                .flat_map(str::split_whitespace)
                .filter(|w| w.contains("/console/login/"))
                .map(str::to_owned)
                .collect()
        };
        let before = links(&self.gw.listing(number).await).len();
        let (status, _) = self.gw.send_text(number, "!console").await;
        assert_eq!(status, 202);
        let l = self
            .gw
            .wait_listing(number, T, |l| links(l).len() > before)
            .await;
        let link = links(&l).pop().expect("the admin got a sign-in link");
        assert!(link.starts_with(&self.gw.public), "{link}");
        link
    }

    /// Signs in through `link`: the session cookie ("sb_console=…").
    pub async fn sign_in_with(&self, link: &str) -> String {
        let r = self.http.post(link).send().await.unwrap();
        assert_eq!(r.status(), 303, "{:?}", r.text().await);
        let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        set.split(';').next().unwrap().to_owned()
    }

    /// A signed-in session: its cookie and CSRF token.
    pub async fn session(&self) -> Session {
        let cookie = self.sign_in_with(&self.link().await).await;
        let s: serde_json::Value = self
            .http
            .get(self.url("/console/api/session"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Session {
            cookie,
            csrf: s["csrf"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn get(&self, s: &Session, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .get(self.url(path))
            .header("cookie", &s.cookie)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn send(
        &self,
        s: &Session,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = self
            .http
            .request(method, self.url(path))
            .header("cookie", &s.cookie)
            .header("x-csrf-token", &s.csrf)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Changes `number`'s access (`allow`, `deny`, `admin`, `user`) on the console: the status.
    pub async fn whitelist(&self, s: &Session, number: &str, action: &str) -> u16 {
        let body = serde_json::json!({"number": number, "action": action});
        self.post(s, "/console/api/whitelist", body).await.0
    }

    pub async fn post(
        &self,
        s: &Session,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.send(s, reqwest::Method::POST, path, body).await
    }
}

pub(crate) struct Session {
    pub cookie: String,
    pub csrf: String,
}

/// `path` of [`shared::console::BRAIN_API`] with a made-up value for each `{…}` segment.
pub(crate) fn sample(path: &str) -> String {
    path.split('/')
        .map(|seg| match seg {
            "{contact}" => "c1",
            "{row}" => "1",
            "{name}" => "faq.md",
            "{stream}" => "inbound",
            "{action}" => "replay",
            s if s.starts_with('{') => panic!("no sample value for {s} in {path}"),
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every console route the gateway answers itself (or refuses), as (method, path); the
/// brain's routes are added from [`shared::console::BRAIN_API`].
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/console"),
    ("GET", "/console/"),
    ("GET", "/console/app.js"),
    ("POST", "/console/logout"),
    ("GET", "/console/api/session"),
    ("GET", "/console/api/whatsapp"),
    ("GET", "/console/api/whatsapp/qr.svg"),
    ("POST", "/console/api/whatsapp/web/logout"),
    ("POST", "/console/api/whatsapp/web/relink"),
    ("POST", "/console/api/audit"),
    ("GET", "/console/api/no-such-thing"),
    ("GET", "/console/no-such-page"),
];

async fn status_of(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> u16 {
    let mut r = http.request(method.parse().unwrap(), url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn every_console_route_is_refused_without_a_session_here_and_on_the_brain() {
    let s = Stack::start(&[], false).await;
    let brain_routes: Vec<(&str, String)> = shared::console::BRAIN_API
        .iter()
        .map(|r| (r.method, sample(r.path)))
        .collect();
    let routes = ROUTES
        .iter()
        .map(|(m, p)| (*m, p.to_string()))
        .chain(brain_routes);
    for (method, path) in routes {
        let path = path.as_str();
        let gw = status_of(&s.http, method, &s.url(path), &[]).await;
        assert_eq!(gw, 401, "{method} {path} without a session");
        let forged = status_of(
            &s.http,
            method,
            &s.url(path),
            &[
                ("cookie", "sb_console=0123456789abcdef"),
                ("x-csrf-token", "x"),
            ],
        )
        .await;
        assert_eq!(forged, 401, "{method} {path} with a made-up session");
        // The brain checks again: its own listener refuses the API just the same.
        if path.starts_with("/console/api/") && !path.contains("whatsapp") {
            let brain = status_of(&s.http, method, &format!("{}{path}", s.brain.http), &[]).await;
            assert_eq!(brain, 401, "{method} {path} on the brain without a session");
        }
    }
    // The page tells a browser how to sign in.
    let page = s.http.get(s.url("/console")).send().await.unwrap();
    assert_eq!(page.status(), 401);
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert!(page.text().await.unwrap().contains("!console"));
}

#[tokio::test]
async fn a_link_signs_in_once_csrf_is_required_and_sign_out_ends_the_session_everywhere() {
    let s = Stack::start(&[], false).await;
    let link = s.link().await;
    // Opening the link (or a preview fetching it) shows a button and uses nothing up.
    for _ in 0..2 {
        let page = s.http.get(&link).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert_eq!(page.headers()["referrer-policy"], "no-referrer");
        assert!(page.text().await.unwrap().contains("method=\"post\""));
    }
    let r = s.http.post(&link).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for part in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=43200",
    ] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Secure"), "plain http: {set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    // Used: refused the second time.
    let again = s.http.post(&link).send().await.unwrap();
    assert_eq!(again.status(), 403);
    let session = Session {
        cookie: cookie.clone(),
        csrf: String::new(),
    };
    let (status, me) = s.get(&session, "/console/api/session").await;
    assert_eq!(status, 200);
    assert_eq!(me["admin"], ADMIN);
    let csrf = me["csrf"].as_str().unwrap().to_owned();
    let page = s
        .http
        .get(s.url("/console/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );

    // A change without the CSRF token, or with another, is refused and changes nothing.
    let body = serde_json::json!({"key": "model", "value": "gpt-csrf"});
    for token in ["", "0000"] {
        let r = s
            .http
            .put(s.url("/console/api/settings"))
            .header("cookie", &cookie)
            .header("x-csrf-token", token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "token {token:?}");
    }
    let (_, settings) = s.get(&session, "/console/api/settings").await;
    assert_ne!(settings[0]["value"], "gpt-csrf");

    // Signed out: the same cookie, from anywhere, signs nobody in.
    let out = Session {
        cookie: cookie.clone(),
        csrf,
    };
    let (status, _) = s.post(&out, "/console/logout", serde_json::json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = s.get(&session, "/console/api/session").await;
    assert_eq!(status, 401);
    let (status, _) = s.get(&session, "/console/api/conversations").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn an_expired_session_or_link_is_refused() {
    let s = Stack::start(&[], false).await;
    let session = s.session().await;
    let mut redis = s.gw.redis().await;
    let keys: Vec<String> = redis
        .keys(format!("{{{}}}:console:session:*", s.gw.prefix()))
        .await
        .unwrap();
    assert_eq!(
        keys.len(),
        1,
        "the session is kept under its hash: {keys:?}"
    );
    assert!(!keys[0].contains(session.cookie.trim_start_matches("sb_console=")));
    // A session whose end has passed is refused even while Redis still holds it.
    let body: String = redis.get(&keys[0]).await.unwrap();
    let mut stored: serde_json::Value = serde_json::from_str(&body).unwrap();
    stored["expires_ms"] = serde_json::json!(shared::ids::now_ms() - 1);
    let _: () = redis
        .set_ex(&keys[0], stored.to_string(), 60)
        .await
        .unwrap();
    let (status, _) = s.get(&session, "/console/api/session").await;
    assert_eq!(status, 401);
    // A link past its 10 minutes is gone from Redis: refused.
    let link = s.link().await;
    let links: Vec<String> = redis
        .keys(format!("{{{}}}:console:link:*", s.gw.prefix()))
        .await
        .unwrap();
    assert_eq!(links.len(), 1);
    let ttl: i64 = redis.ttl(&links[0]).await.unwrap();
    assert!((590..=600).contains(&ttl), "a link lives 10 minutes: {ttl}");
    let _: () = redis.pexpire(&links[0], 1).await.unwrap();
    until("the link to expire", async || {
        let left: bool = redis.exists(&links[0]).await.unwrap();
        (!left).then_some(())
    })
    .await;
    assert_eq!(s.http.post(&link).send().await.unwrap().status(), 403);
}

/// Waits until `f` returns `Some` (at most [`T`]).
pub(crate) async fn until<R>(what: &str, f: impl AsyncFnMut() -> Option<R>) -> R {
    shared::testing::eventually(what, T, f).await
}

#[tokio::test]
async fn whatsapp_web_shows_its_qr_until_linked_and_logs_out_and_relinks_from_the_console() {
    let fake = crate::web::Fake::new(false);
    let env = fake.env();
    let mut extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    extra.push(("TRANSPORTS", "web,webchat"));
    let s = Stack::start(&extra, false).await;
    let me = s.session().await;
    let web = |w: &serde_json::Value| {
        w["transports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["kind"] == "web")
            .unwrap()
            .clone()
    };
    let waiting = until("a QR to scan", async || {
        let (_, w) = s.get(&me, "/console/api/whatsapp").await;
        let t = web(&w);
        (t["qr"] == true).then_some(t)
    })
    .await;
    assert_eq!(waiting["state"], "waiting_for_qr");
    let svg = s
        .http
        .get(s.url("/console/api/whatsapp/qr.svg"))
        .header("cookie", &me.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    assert!(svg.text().await.unwrap().contains("<svg"));
    // Scanned: connected, no QR.
    fake.inject("LINK");
    until("linked", async || {
        let (_, w) = s.get(&me, "/console/api/whatsapp").await;
        let t = web(&w);
        (t["connected"] == true && t["qr"] == false).then_some(())
    })
    .await;
    let (status, _) = s.get(&me, "/console/api/whatsapp/qr.svg").await;
    assert_eq!(status, 404);
    // Log out: unlinked, restarted, a new QR.
    let starts = fake.starts();
    let (status, _) = s
        .post(
            &me,
            "/console/api/whatsapp/web/logout",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200);
    until("a new QR after logging out", async || {
        let (_, w) = s.get(&me, "/console/api/whatsapp").await;
        (web(&w)["qr"] == true && fake.starts() > starts).then_some(())
    })
    .await;
    assert!(!fake.path("linked").exists());
    // Relink: the session restarts.
    let starts = fake.starts();
    let (status, _) = s
        .post(
            &me,
            "/console/api/whatsapp/web/relink",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200);
    until("a restart", async || (fake.starts() > starts).then_some(())).await;
    // The web chat has no device to log out.
    let (status, why) = s
        .post(
            &me,
            "/console/api/whatsapp/webchat/logout",
            serde_json::json!({}),
        )
        .await;
    assert_eq!((status, why["error"].is_string()), (409, true));
    let (_, audit) = s.get(&me, "/console/api/audit").await;
    let actions: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|a| (a["action"].as_str().unwrap(), a["target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [("whatsapp.logout", "web"), ("whatsapp.relink", "web")]
    );
}

#[tokio::test]
async fn the_operator_gets_a_link_from_the_command_line() {
    // Behind a proxy: demo mode is refused with a PUBLIC_URL off this machine.
    let s = Stack::start(
        &[
            ("PUBLIC_URL", "https://shop.example"),
            ("WEBCHAT_DEMO", "false"),
        ],
        false,
    )
    .await;
    let out = tokio::process::Command::new(crate::helpers::BIN)
        .arg("console-link")
        .envs(&s.gw.senv.env)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let token = link
        .strip_prefix("https://shop.example/console/login/")
        .unwrap_or_else(|| panic!("{link}"));
    // Behind https the cookie is Secure; the audit log names the operator.
    let r = s
        .http
        .post(s.url(&format!("/console/login/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.contains("; Secure"), "{set}");
    let session = Session {
        cookie: set.split(';').next().unwrap().to_owned(),
        csrf: String::new(),
    };
    let (_, me) = s.get(&session, "/console/api/session").await;
    assert_eq!(me["admin"], "operator");
    // Another service has no console.
    let brain = tokio::process::Command::new(shared::testing::workspace_bin("brain"))
        .arg("console-link")
        .envs(&s.gw.senv.env)
        .output()
        .await
        .unwrap();
    assert!(!brain.status.success());
}

#[tokio::test]
async fn console_actions_work_end_to_end_and_are_audited() {
    let s = Stack::start(&[], true).await;
    s.fake.script([Reply::Text("We open at 9.".into())]);
    let me = s.session().await;

    // A customer writes; the model answers; the console lists and shows it, with authors.
    let (status, _) = s.gw.send_text(CUSTOMER, "when do you open?").await;
    assert_eq!(status, 202);
    s.gw.wait_listing(CUSTOMER, T, |l| l.len() >= 2).await;
    let contact = until("the conversation in the list", async || {
        let (_, list) = s
            .get(&me, "/console/api/conversations?phone=5550002222")
            .await;
        let c = list.as_array()?.first()?.clone();
        (c["last"] == "We open at 9.").then_some(c)
    })
    .await;
    assert_eq!(contact["phone"], CUSTOMER, "numbers in full, to admins");
    assert_eq!(contact["last_author"], "model");
    let (_, none) = s.get(&me, "/console/api/conversations?phone=999").await;
    assert_eq!(none, serde_json::json!([]));
    let id = contact["contact_id"].as_str().unwrap().to_owned();
    let (status, shown) = s
        .get(&me, &format!("/console/api/conversations/{id}"))
        .await;
    assert_eq!(status, 200);
    let authors: Vec<(&str, &str)> = shown["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["author"].as_str().unwrap(),
                m["content"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        authors,
        [
            ("customer", "when do you open?"),
            ("model", "We open at 9.")
        ]
    );
    // The admin's own !console exchange is never logged (its answer carries a link).
    let (_, list) = s.get(&me, "/console/api/conversations").await;
    assert!(list.as_array().unwrap().iter().all(|c| c["phone"] != ADMIN));

    // Reply as the business: the customer receives it on the web chat; logged as a person's.
    let (status, _) = s
        .post(
            &me,
            &format!("/console/api/conversations/{id}/reply"),
            serde_json::json!({"text": "Hi, Ana here from the shop."}),
        )
        .await;
    assert_eq!(status, 200);
    let l =
        s.gw.wait_listing(CUSTOMER, T, |l| {
            l.iter().any(|m| m["text"] == "Hi, Ana here from the shop.")
        })
        .await;
    assert!(
        l.iter().any(|m| m["text"] == "Hi, Ana here from the shop."),
        "{l:?}"
    );
    let last_row = shown["messages"][1]["id"].as_i64().unwrap();
    let (_, newer) = s
        .get(
            &me,
            &format!("/console/api/conversations/{id}?after={last_row}"),
        )
        .await;
    assert_eq!(newer["messages"][0]["author"], "person");
    assert_eq!(newer["messages"].as_array().unwrap().len(), 1);
    let (status, bad) = s
        .post(
            &me,
            &format!("/console/api/conversations/{id}/reply"),
            serde_json::json!({"text": "  "}),
        )
        .await;
    assert_eq!((status, bad["error"].is_string()), (400, true));

    // Pause the bot for the contact: the next message is logged, not answered; resume.
    let (status, _) = s
        .post(
            &me,
            &format!("/console/api/conversations/{id}/pause"),
            serde_json::json!({"minutes": 30}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, shown) = s
        .get(&me, &format!("/console/api/conversations/{id}"))
        .await;
    assert!(shown["paused_until_ms"].as_i64().unwrap() > shared::ids::now_ms());
    s.gw.send_text(CUSTOMER, "anyone there?").await;
    until("the paused message logged", async || {
        let (_, c) = s
            .get(&me, &format!("/console/api/conversations/{id}"))
            .await;
        (c["messages"].as_array()?.last()?["content"] == "anyone there?").then_some(())
    })
    .await;
    assert_eq!(s.fake.requests().len(), 1, "no model call while paused");
    let (status, resumed) = s
        .post(
            &me,
            &format!("/console/api/conversations/{id}/resume"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!((status, resumed["resumed"].as_bool()), (200, Some(true)));

    // Settings: changed here, shown, back to the environment's.
    let (status, set) = s
        .send(
            &me,
            reqwest::Method::PUT,
            "/console/api/settings",
            serde_json::json!({"key": "model", "value": "gpt-4o-mini"}),
        )
        .await;
    assert_eq!((status, set["value"].as_str()), (200, Some("gpt-4o-mini")));
    let (status, bad) = s
        .send(
            &me,
            reqwest::Method::PUT,
            "/console/api/settings",
            serde_json::json!({"key": "temperature", "value": "9"}),
        )
        .await;
    assert_eq!((status, bad["error"].is_string()), (400, true));
    let (_, list) = s.get(&me, "/console/api/settings").await;
    let model = list
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["key"] == "model")
        .unwrap()
        .clone();
    assert_eq!(
        (model["value"].as_str(), model["set_here"].as_bool()),
        (Some("gpt-4o-mini"), Some(true))
    );

    // The whitelist: allow a number, see it listed; an admin cannot demote themself.
    let (status, _) = s
        .post(
            &me,
            "/console/api/whitelist",
            serde_json::json!({"number": "+1 555 000 3333", "action": "allow"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, wl) = s.get(&me, "/console/api/whitelist").await;
    assert!(
        wl.as_array()
            .unwrap()
            .iter()
            .any(|c| c["phone"] == "+15550003333" && c["allowed"] == true)
    );
    assert_eq!(s.whitelist(&me, ADMIN, "user").await, 400);

    // Knowledge: a file written here is indexed at once — the next question it answers is
    // answered from it, with no model call.
    let calls = s.fake.requests().len();
    let faq = "## Do you sell gift cards?\nAlso: gift vouchers\n\nYes: gift cards from $10, in the shop.\n";
    let (status, put) = s
        .send(
            &me,
            reqwest::Method::PUT,
            "/console/api/knowledge/gifts.md",
            serde_json::json!({"content": faq}),
        )
        .await;
    assert_eq!(
        (status, put["faq_entries"].as_u64()),
        (200, Some(1)),
        "{put}"
    );
    let (status, _) = s
        .send(
            &me,
            reqwest::Method::PUT,
            "/console/api/knowledge/..%2Fetc.md",
            serde_json::json!({"content": "x"}),
        )
        .await;
    assert_eq!(status, 400);
    let (_, list) = s.get(&me, "/console/api/knowledge").await;
    assert_eq!(list["files"][0]["name"], "gifts.md");
    assert_eq!(list["files"][0]["source"], "console");
    let (_, file) = s.get(&me, "/console/api/knowledge/gifts.md").await;
    assert_eq!(file["content"], faq);
    s.gw.send_text(CUSTOMER, "Do you sell gift cards?").await;
    s.gw.wait_listing(CUSTOMER, T, |l| {
        l.iter()
            .any(|m| m["text"].as_str().is_some_and(|t| t.contains("from $10")))
    })
    .await;
    assert_eq!(
        s.fake.requests().len(),
        calls,
        "answered from the knowledge base"
    );
    let (_, shown) = s
        .get(&me, &format!("/console/api/conversations/{id}"))
        .await;
    assert_eq!(
        shown["messages"].as_array().unwrap().last().unwrap()["author"],
        "knowledge"
    );
    let (status, _) = s
        .send(
            &me,
            reqwest::Method::DELETE,
            "/console/api/knowledge/gifts.md",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = s
        .send(
            &me,
            reqwest::Method::DELETE,
            "/console/api/knowledge/gifts.md",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 404);

    // Dead letters: a poison inbound event is listed, replayed (dead again), then discarded.
    poison(&s).await;
    let dead = until("a dead letter", async || {
        let (_, d) = s.get(&me, "/console/api/deadletters").await;
        let inbound = d
            .as_array()?
            .iter()
            .find(|x| x["stream"] == "inbound")?
            .clone();
        (inbound["count"] == 1).then_some(inbound)
    })
    .await;
    let first = dead["entries"][0]["id"].as_str().unwrap().to_owned();
    assert!(
        !dead.to_string().contains("poison text"),
        "entries are redacted: {dead}"
    );
    let (status, r) = s
        .post(
            &me,
            "/console/api/deadletters/inbound/replay",
            serde_json::json!({"ids": [first]}),
        )
        .await;
    assert_eq!((status, r["replay"].as_u64()), (200, Some(1)));
    let again = until("the replayed letter dead again", async || {
        let (_, d) = s.get(&me, "/console/api/deadletters").await;
        let inbound = d
            .as_array()?
            .iter()
            .find(|x| x["stream"] == "inbound")?
            .clone();
        let id = inbound["entries"].as_array()?.first()?["id"]
            .as_str()?
            .to_owned();
        (id != first).then_some(id)
    })
    .await;
    let (status, r) = s
        .post(
            &me,
            "/console/api/deadletters/inbound/discard",
            serde_json::json!({"ids": [again]}),
        )
        .await;
    assert_eq!((status, r["discard"].as_u64()), (200, Some(1)));
    let (status, _) = s
        .post(
            &me,
            "/console/api/deadletters/nowhere/replay",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 404);

    // Costs from the ledger's tables: today's spend, the budget, the chart's days.
    let costs = until("today's spend", async || {
        let (_, c) = s.get(&me, "/console/api/costs").await;
        (c["periods"][0]["spend_usd"].as_f64()? > 0.0).then_some(c)
    })
    .await;
    assert_eq!(costs["budget_usd"].as_f64(), Some(5.0));
    assert!(costs["budget_used"].as_f64().unwrap() > 0.0);
    assert_eq!(costs["daily"].as_array().unwrap().len(), 30);
    assert_eq!(
        costs["daily"][29]["messages"], 3,
        "three customer messages today"
    );
    assert_eq!(
        costs["periods"][0]["calls"], 1,
        "one model call: the FAQ answer is free"
    );
    assert_eq!(costs["top_contacts"][0]["phone"], CUSTOMER);

    // The browser may not write the audit log; everything above is in it, with who.
    let (status, _) = s
        .post(
            &me,
            "/console/api/audit",
            serde_json::json!({"action": "whatsapp.logout"}),
        )
        .await;
    assert_eq!(status, 404);
    let (_, audit) = s.get(&me, "/console/api/audit").await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "reply",
            "pause",
            "resume",
            "settings.set",
            "whitelist.allow",
            "knowledge.write",
            "knowledge.delete",
            "deadletters.replay",
            "deadletters.discard"
        ]
    );
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["admin"] == ADMIN)
    );
    assert!(
        !audit.to_string().contains("Ana here"),
        "no message text in the audit log"
    );

    // A photo: logged with its caption, the image served while the media store keeps it.
    let form = crate::helpers::file_form(crate::helpers::PNG.to_vec(), "image/png")
        .text("caption", "this one?");
    assert_eq!(s.gw.send_form(CUSTOMER, form).await.status(), 202);
    let photo = until("the photo logged", async || {
        let (_, c) = s
            .get(&me, &format!("/console/api/conversations/{id}"))
            .await;
        c["messages"]
            .as_array()?
            .iter()
            .find(|m| m["kind"] == "image")
            .cloned()
    })
    .await;
    assert_eq!(
        (photo["content"].as_str(), photo["has_media"].as_bool()),
        (Some("this one?"), Some(true))
    );
    let image = s
        .http
        .get(s.url(&format!(
            "/console/api/conversations/{id}/media/{}",
            photo["id"]
        )))
        .header("cookie", &me.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(image.headers()["content-type"], "image/png");
    assert_eq!(image.bytes().await.unwrap().as_ref(), crate::helpers::PNG);

    // !forget erases the conversation log with the rest.
    let (status, _) = s.gw.send_text(ADMIN, &format!("!forget {CUSTOMER}")).await;
    assert_eq!(status, 202);
    until("the conversation forgotten", async || {
        let (status, _) = s
            .get(&me, &format!("/console/api/conversations/{id}"))
            .await;
        (status == 404).then_some(())
    })
    .await;
    let (_, list) = s.get(&me, "/console/api/conversations").await;
    assert!(!list.to_string().contains(CUSTOMER), "{list}");
}

/// An inbound event the brain can never handle (no message id): dead-lettered at once.
async fn poison(s: &Stack) {
    use shared::proto::{Envelope, Identity, Inbound, Payload, identity};
    let ib = Inbound {
        message_id: String::new(),
        text: "poison text".into(),
        identities: vec![Identity {
            kind: identity::Kind::Phone as i32,
            value: "+15550004444".into(),
        }],
        ..Default::default()
    };
    s.gw.bus
        .publisher()
        .publish(shared::bus::Publish::new(
            shared::bus::Stream::Inbound,
            Envelope::new("test", Payload::Inbound(ib)),
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_console_page_in_headless_chromium() {
    if std::env::var("SB_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("SB_SKIP_BROWSER=1: browser test skipped");
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists()
            && std::path::Path::new("/usr/bin/chromium").exists(),
        "the browser test needs Debian's chromium and `npm ci` in {} (scripts/test does both)",
        dir.display()
    );
    let fake = crate::web::Fake::new(false);
    let env = fake.env();
    let mut extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    extra.push(("TRANSPORTS", "web,webchat"));
    let s = Stack::start(&extra, true).await;
    s.fake
        .script([Reply::Text("Yes, we deliver on Saturdays.".into())]);
    s.gw.send_text(CUSTOMER, "do you deliver on saturday?")
        .await;
    s.gw.wait_listing(CUSTOMER, T, |l| l.len() >= 2).await;
    poison(&s).await;
    let reply = "Hello from the shop, Ana here.";
    let shots = shared::testing::TempDir::new("console-shots");
    let link = s.link().await;
    let out = tokio::process::Command::new("node")
        .arg(dir.join("console.mjs"))
        .arg(&link)
        .arg(CUSTOMER)
        .arg(reply)
        .arg(shots.path())
        .current_dir(&dir)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), out)
        .await
        .expect("browser test timed out")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "console browser test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The customer received the reply on the web chat.
    let l =
        s.gw.wait_listing(CUSTOMER, T, |l| l.iter().any(|m| m["text"] == reply))
            .await;
    assert!(l.iter().any(|m| m["text"] == reply), "{l:?}");
    // What the page did is what the services hold.
    let me = s.session().await;
    let (_, settings) = s.get(&me, "/console/api/settings").await;
    assert!(settings.to_string().contains("gpt-4o-mini"));
    let (_, audit) = s.get(&me, "/console/api/audit").await;
    for action in [
        "reply",
        "settings.set",
        "knowledge.write",
        "knowledge.import",
        "knowledge.faq",
        "deadletters.replay",
    ] {
        assert!(
            audit.to_string().contains(action),
            "{action} not audited: {audit}"
        );
    }
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/console");
    for page in [
        "whatsapp",
        "conversation",
        "settings",
        "questions",
        "deadletters",
        "costs",
        "audit",
    ] {
        let file = shots.path().join(format!("console-{page}.png"));
        let png = std::fs::read(&file).expect("screenshot written");
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 5_000,
            "{page}: screenshot too small"
        );
        // SB_UPDATE_DOCS=1 refreshes the screenshots docs/console shows.
        if std::env::var("SB_UPDATE_DOCS").is_ok_and(|v| v == "1") {
            std::fs::create_dir_all(&docs).unwrap();
            std::fs::copy(&file, docs.join(format!("{page}.png"))).unwrap();
        }
    }
}

#[tokio::test]
async fn a_conversation_waiting_for_a_person_is_answered_and_handed_back_from_the_console() {
    let s = Stack::start(&[], false).await;
    let me = s.session().await;
    s.gw.send_text(CUSTOMER, "I want to talk to a human please")
        .await;
    let waiting = until("the handoff in the list", async || {
        let (_, list) = s.get(&me, "/console/api/conversations").await;
        let c = list
            .as_array()?
            .iter()
            .find(|c| c["phone"] == CUSTOMER)?
            .clone();
        c["handoff"].is_string().then_some(c)
    })
    .await;
    let id = waiting["contact_id"].as_str().unwrap().to_owned();
    let (_, shown) = s
        .get(&me, &format!("/console/api/conversations/{id}"))
        .await;
    assert_eq!(shown["handoff"]["reason"], "asked");
    assert_eq!(shown["handoff"]["reference"], waiting["handoff"]);
    assert_eq!(
        s.fake.requests().len(),
        0,
        "no model call for a person's question"
    );
    // The person answers; the customer's next message stays with the person (no bot answer).
    let (status, _) = s
        .post(
            &me,
            &format!("/console/api/conversations/{id}/reply"),
            serde_json::json!({"text": "Hi, I'm here."}),
        )
        .await;
    assert_eq!(status, 200);
    s.gw.wait_listing(CUSTOMER, T, |l| {
        l.iter().any(|m| m["text"] == "Hi, I'm here.")
    })
    .await;
    s.gw.send_text(CUSTOMER, "great, about my order").await;
    until("the message logged", async || {
        let (_, c) = s
            .get(&me, &format!("/console/api/conversations/{id}"))
            .await;
        (c["messages"].as_array()?.last()?["content"] == "great, about my order").then_some(())
    })
    .await;
    assert_eq!(s.fake.requests().len(), 0);
    // Handed back: the bot answers again.
    let (status, _) = s
        .post(
            &me,
            &format!("/console/api/conversations/{id}/resume"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, shown) = s
        .get(&me, &format!("/console/api/conversations/{id}"))
        .await;
    assert!(shown["handoff"].is_null());
    s.gw.send_text(CUSTOMER, "one more thing").await;
    until("the bot's answer", async || {
        let (_, c) = s
            .get(&me, &format!("/console/api/conversations/{id}"))
            .await;
        (c["messages"].as_array()?.last()?["author"] == "model").then_some(())
    })
    .await;
}
