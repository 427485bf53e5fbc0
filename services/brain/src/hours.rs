//! Business hours (`BUSINESS_HOURS`, e.g. `mon-fri 09:00-18:00; sat 10:00-14:00`, in
//! `BUSINESS_TIMEZONE`): whether the business is open, when it opens next, and a deadline
//! counted in opening minutes (a handoff's timeout does not run at night). Unset: always open.

use std::time::Duration;

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};

const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

/// The opening hours (see the module docs).
#[derive(Debug, Clone)]
pub struct Hours {
    tz: TimeZone,
    /// Per weekday (Monday first): opening intervals in minutes of the day; `None`: always open.
    week: Option<[Vec<(u32, u32)>; 7]>,
}

fn weekday_index(w: Weekday) -> usize {
    w.to_monday_zero_offset() as usize
}

fn minutes(hhmm: &str) -> Option<u32> {
    let (h, m) = hhmm.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

fn day(name: &str) -> Option<usize> {
    let n = name.trim().to_ascii_lowercase();
    DAYS.iter().position(|(d, _)| n.starts_with(d))
}

impl Hours {
    /// Always open.
    pub fn always() -> Self {
        Self {
            tz: TimeZone::UTC,
            week: None,
        }
    }

    /// Parses `spec` (`mon-fri 09:00-18:00; sat 10:00-14:00`; days as ranges or lists) in the
    /// IANA time zone `tz`.
    pub fn parse(spec: &str, tz: &str) -> Result<Self, String> {
        let tz = TimeZone::get(tz).map_err(|e| format!("unknown time zone {tz:?}: {e}"))?;
        let mut week: [Vec<(u32, u32)>; 7] = Default::default();
        for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || format!("{part:?}: expected days and hours like \"mon-fri 09:00-18:00\"");
            let (days, times) = part.split_once(char::is_whitespace).ok_or_else(bad)?;
            let (from, to) = times.trim().split_once('-').ok_or_else(bad)?;
            let (from, to) = (minutes(from).ok_or_else(bad)?, minutes(to).ok_or_else(bad)?);
            if from >= to {
                return Err(format!("{part:?}: opening must come before closing"));
            }
            for group in days.split(',') {
                let (a, b) = match group.split_once('-') {
                    Some((a, b)) => (day(a).ok_or_else(bad)?, day(b).ok_or_else(bad)?),
                    None => {
                        let d = day(group).ok_or_else(bad)?;
                        (d, d)
                    }
                };
                let mut d = a;
                loop {
                    week[d].push((from, to));
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
        }
        if week.iter().all(Vec::is_empty) {
            return Err("no opening hours given".to_owned());
        }
        for w in &mut week {
            w.sort_unstable();
        }
        Ok(Self {
            tz,
            week: Some(week),
        })
    }

    /// `BUSINESS_HOURS` in `BUSINESS_TIMEZONE` (default `LEDGER_TIMEZONE`, then UTC).
    pub fn from_env(env: &mut shared::config::Env) -> Self {
        let tz = env
            .opt_string("BUSINESS_TIMEZONE")
            .unwrap_or_else(|| env.string("LEDGER_TIMEZONE", "UTC"));
        let Some(spec) = env.opt_string("BUSINESS_HOURS") else {
            return Self::always();
        };
        match Self::parse(&spec, &tz) {
            Ok(h) => h,
            Err(e) => {
                env.problem("BUSINESS_HOURS", e);
                Self::always()
            }
        }
    }

    fn zoned(&self, ms: i64) -> ZonedDateTime {
        Timestamp::from_millisecond(ms)
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned_datetime(self.tz.clone())
    }

    /// The opening intervals of `date`, as unix ms.
    fn intervals(&self, week: &[Vec<(u32, u32)>; 7], date: Date) -> Vec<(i64, i64)> {
        let at = |m: u32| {
            let t = if m >= 24 * 60 {
                return date
                    .tomorrow()
                    .ok()
                    .and_then(|d| d.to_zoned_datetime(self.tz.clone()).ok())
                    .map_or(i64::MAX, |z| z.timestamp().as_millisecond());
            } else {
                Time::new((m / 60) as i8, (m % 60) as i8, 0, 0).expect("a time of day")
            };
            date.to_datetime(t)
                .to_zoned_datetime(self.tz.clone())
                .map_or(i64::MAX, |z| z.timestamp().as_millisecond())
        };
        week[weekday_index(date.weekday())]
            .iter()
            .map(|&(a, b)| (at(a), at(b)))
            .collect()
    }

    /// Whether the business is open at `ms`.
    pub fn is_open(&self, ms: i64) -> bool {
        let Some(week) = &self.week else { return true };
        let date = self.zoned(ms).date();
        self.intervals(week, date)
            .iter()
            .any(|&(a, b)| a <= ms && ms < b)
    }

    /// When it opens next after `ms` (`ms` itself when open), looking a fortnight ahead.
    pub fn next_open(&self, ms: i64) -> i64 {
        self.add_open(ms, Duration::ZERO)
    }

    /// The moment `open` of opening time has passed since `ms` (counting only open minutes).
    pub fn add_open(&self, ms: i64, open: Duration) -> i64 {
        let Some(week) = &self.week else {
            return ms + open.as_millis() as i64;
        };
        let mut left = open.as_millis() as i64;
        let mut date = self.zoned(ms).date();
        for _ in 0..15 {
            for (a, b) in self.intervals(week, date) {
                let start = a.max(ms);
                if b <= start {
                    continue;
                }
                if start + left < b || (left == 0 && start < b) {
                    return start + left;
                }
                left -= b - start;
            }
            date = date.tomorrow().unwrap_or(date);
        }
        ms + open.as_millis() as i64
    }

    /// When it opens next, as the customer reads it: `Monday 09:00`.
    pub fn describe(&self, ms: i64) -> String {
        self.describe_in(ms, shared::lang::Lang::En)
    }

    /// [`Hours::describe`] with the weekday in `lang` ("lunes 09:00", "segunda-feira 09:00").
    pub fn describe_in(&self, ms: i64, lang: shared::lang::Lang) -> String {
        use shared::lang::Lang;
        const ES: [&str; 7] = [
            "lunes",
            "martes",
            "miércoles",
            "jueves",
            "viernes",
            "sábado",
            "domingo",
        ];
        const PT: [&str; 7] = [
            "segunda-feira",
            "terça-feira",
            "quarta-feira",
            "quinta-feira",
            "sexta-feira",
            "sábado",
            "domingo",
        ];
        let z = self.zoned(ms);
        let day = usize::from(z.weekday().to_monday_zero_offset() as u8);
        match lang {
            Lang::En => z.strftime("%A %H:%M").to_string(),
            Lang::Es => format!("{} {}", ES[day], z.strftime("%H:%M")),
            Lang::Pt => format!("{} {}", PT[day], z.strftime("%H:%M")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of a local time in Madrid.
    fn at(s: &str) -> i64 {
        let dt: jiff::civil::DateTime = s.parse().unwrap();
        dt.to_zoned_datetime(TimeZone::get("Europe/Madrid").unwrap())
            .unwrap()
            .timestamp()
            .as_millisecond()
    }

    fn shop() -> Hours {
        Hours::parse("mon-fri 09:00-18:00; sat 10:00-14:00", "Europe/Madrid").unwrap()
    }

    #[test]
    fn open_and_closed_follow_the_days_and_hours_in_the_time_zone() {
        let h = shop();
        // 2026-12-03 is a Thursday.
        assert!(h.is_open(at("2026-12-03T09:00")));
        assert!(h.is_open(at("2026-12-03T17:59")));
        assert!(!h.is_open(at("2026-12-03T18:00")));
        assert!(!h.is_open(at("2026-12-03T08:59")));
        assert!(h.is_open(at("2026-12-05T11:00")), "Saturday morning");
        assert!(!h.is_open(at("2026-12-06T11:00")), "Sunday");
        assert!(Hours::always().is_open(0));
    }

    #[test]
    fn the_next_opening_and_a_deadline_count_only_open_minutes() {
        let h = shop();
        // Saturday after closing: next is Monday 09:00.
        let sat = at("2026-12-05T15:00");
        assert_eq!(h.next_open(sat), at("2026-12-07T09:00"));
        assert_eq!(h.describe(h.next_open(sat)), "Monday 09:00");
        let next = h.next_open(sat);
        assert_eq!(h.describe_in(next, shared::lang::Lang::Es), "lunes 09:00");
        assert_eq!(
            h.describe_in(next, shared::lang::Lang::Pt),
            "segunda-feira 09:00"
        );
        // An hour's timeout asked at 17:30 on Friday ends at 10:30 on Saturday.
        let fri = at("2026-12-04T17:30");
        assert_eq!(
            h.add_open(fri, Duration::from_secs(3600)),
            at("2026-12-05T10:30")
        );
        // Open now: the deadline is plain time.
        let thu = at("2026-12-03T10:00");
        assert_eq!(h.add_open(thu, Duration::from_secs(600)), thu + 600_000);
        assert_eq!(h.next_open(thu), thu);
    }

    #[test]
    fn bad_specifications_say_what_is_wrong() {
        assert!(Hours::parse("weekdays 9-5", "UTC").is_err());
        assert!(Hours::parse("mon 18:00-09:00", "UTC").is_err());
        assert!(Hours::parse("mon 09:00-18:00", "Mars/Olympus").is_err());
        assert!(Hours::parse("", "UTC").is_err());
        let wrap = Hours::parse("fri-mon 10:00-12:00", "UTC").unwrap();
        assert!(
            wrap.is_open(at("2026-12-06T11:00") + 3_600_000),
            "Sunday is in fri-mon"
        );
    }
}
