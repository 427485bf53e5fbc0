//! The `EVENTS*` variables: the owner's events webhook ([`crate::events`]).

use super::Env;
use crate::events::EventsConfig;

/// Reads the `EVENTS*` variables ([`crate::events`]); problems are recorded in `env`.
pub fn events_from_env(env: &mut Env) -> EventsConfig {
    let url = env.secret_http_url("EVENTS_WEBHOOK_URL");
    let secret =
        env.secret("EVENTS_WEBHOOK_SECRET").and_then(|s| {
            match crate::events::decode_secret(secrecy::ExposeSecret::expose_secret(&s)) {
                Ok(k) => Some(std::sync::Arc::from(k)),
                Err(e) => {
                    env.problem("EVENTS_WEBHOOK_SECRET", e);
                    None
                }
            }
        });
    if url.is_none() {
        for set in ["EVENTS_WEBHOOK_SECRET", "EVENTS"] {
            if env.raw(set).is_some_and(|v| !v.trim().is_empty()) {
                env.problem(
                    set,
                    "set without EVENTS_WEBHOOK_URL: no events would be sent (set the URL, or \
                     remove this)",
                );
            }
        }
    }
    if url.is_some() && secret.is_none() && env.raw("EVENTS_WEBHOOK_SECRET").is_none() {
        env.problem(
            "EVENTS_WEBHOOK_SECRET",
            "required with EVENTS_WEBHOOK_URL: whsec_ followed by base64 of 24 to 64 random \
             bytes (e.g. `echo whsec_$(openssl rand -base64 32)`)",
        );
    }
    let mut kinds = Vec::new();
    match env.opt_string("EVENTS") {
        None => kinds.extend(crate::events::Kind::ALL),
        Some(list) => {
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                match name.parse::<crate::events::Kind>() {
                    Ok(k) if !kinds.contains(&k) => kinds.push(k),
                    Ok(_) => {}
                    Err(e) => env.problem("EVENTS", e),
                }
            }
            if kinds.is_empty() {
                env.problem("EVENTS", "names no kind of event; unset it for all");
            }
        }
    }
    let include_text = env.flag("EVENTS_INCLUDE_TEXT", false);
    let max_queued = env.int_in("EVENTS_MAX_QUEUED", 10_000u64, 100, 1_000_000);
    EventsConfig {
        url,
        secret,
        kinds,
        include_text,
        max_queued,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lists_every_problem_and_defaults_to_every_kind() {
        let mut env = Env::from_pairs([
            ("EVENTS_WEBHOOK_URL", "https://hooks.example/x"),
            ("EVENTS", "message.in, nope"),
        ]);
        let cfg = events_from_env(&mut env);
        let problems: Vec<String> = env
            .problems()
            .iter()
            .map(|p| format!("{}: {}", p.variable, p.message))
            .collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("EVENTS_WEBHOOK_SECRET")));
        assert!(problems.iter().any(|p| p.contains("nope")));
        assert_eq!(cfg.kinds, [crate::events::Kind::MessageIn]);
        let mut env = Env::from_pairs([
            ("EVENTS_WEBHOOK_URL", "https://hooks.example/x"),
            (
                "EVENTS_WEBHOOK_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
        ]);
        let cfg = events_from_env(&mut env);
        assert!(env.problems().is_empty());
        assert!(crate::events::Kind::ALL.iter().all(|k| cfg.wants(*k)));
        assert!(
            !EventsConfig::default().wants(crate::events::Kind::MessageIn),
            "no URL: no events"
        );
        // A secret or a list without a URL is a mistake, said; a secret that is not base64
        // is said without quoting it.
        let mut env = Env::from_pairs([
            (
                "EVENTS_WEBHOOK_SECRET",
                "whsec_Mf!Q9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
            ("EVENTS", ","),
        ]);
        events_from_env(&mut env);
        let problems: Vec<String> = env
            .problems()
            .iter()
            .map(|p| format!("{}: {}", p.variable, p.message))
            .collect();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems
                .iter()
                .all(|p| !p.contains("Mf!") && !p.contains("offset"))
        );
    }
}
