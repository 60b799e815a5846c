//! `{{name}}`: welcomes each new user once, and follows up later.
//!
//! | Event | The reactor |
//! |---|---|
//! | `user.registered` on `user-…`, data `{"user", "email", "follow_up_ms"?}` | emits `welcome.requested` on `email-<user>` and schedules a follow-up `follow_up_ms` later (default one day) |
//! | the follow-up timer (`refract.timer`) | emits `follow_up.requested` on `email-<user>` |
//!
//! A user registered twice is welcomed once: the `users` row is the reactor's state,
//! and its `INSERT` says whether the user is new. The host appends the emits exactly
//! once, after the batch commits; the timer is due a delay after the *event* was
//! recorded, so a replay makes the same decisions.

use std::borrow::Cow;
use std::time::Duration;

use refract_reactor_sdk::{Db, Effects, Event, Info, Reactor, Result, Statement, Timer, params};
use serde::{Deserialize, Serialize};

/// The reactor.
pub struct Welcome;

refract_reactor_sdk::export_reactor!(Welcome);

/// How long after a registration the follow-up is due unless the event says otherwise.
pub const DEFAULT_FOLLOW_UP: Duration = Duration::from_secs(24 * 60 * 60);

/// `user.registered`: `{"user": "u1", "email": "ann@example.com", "follow_up_ms": 60000}`.
#[derive(Deserialize)]
struct Registered<'a> {
    #[serde(borrow)]
    user: Cow<'a, str>,
    #[serde(borrow)]
    email: Cow<'a, str>,
    follow_up_ms: Option<u64>,
}

/// The data of both emits, and the follow-up timer's payload.
#[derive(Serialize, Deserialize)]
struct Mail<'a> {
    #[serde(borrow)]
    user: Cow<'a, str>,
    #[serde(borrow)]
    email: Cow<'a, str>,
}

/// ?1 user, ?2 offset. Changes one row for a new user, none for a known one.
static REGISTER: Statement = Statement::new(
    "INSERT INTO users (user_id, registered_offset) VALUES (?1, ?2)
     ON CONFLICT (user_id) DO NOTHING",
);

/// ?1 user: the follow-up was requested.
static FOLLOWED_UP: Statement =
    Statement::new("UPDATE users SET followed_up = 1 WHERE user_id = ?1");

impl Reactor for Welcome {
    fn info() -> Info {
        // Its own timer events are delivered whatever the subscriptions say.
        Info::new(
            "{{name}}",
            "Welcomes each new user once, and follows up later",
        )
        .event_types(["user.registered"])
    }

    fn emits() -> &'static [&'static str] {
        &["welcome.requested", "follow_up.requested"]
    }

    fn init(db: &mut Db) -> Result<()> {
        db.execute_script(
            "CREATE TABLE users (
                user_id           TEXT PRIMARY KEY,
                registered_offset INTEGER NOT NULL,
                followed_up       INTEGER NOT NULL DEFAULT 0
            )",
        )
    }

    fn react(event: &Event<'_>, db: &mut Db, effects: &mut Effects) -> Result<()> {
        if let Some(timer) = Timer::of(event)? {
            let mail: Mail<'_> = timer.payload()?;
            db.execute_now(&FOLLOWED_UP, params![&*mail.user])?;
            return effects.emit(
                &format!("email-{}", mail.user),
                "follow_up.requested",
                &mail,
            );
        }
        let registered: Registered<'_> = event.data()?;
        let offset = i64::try_from(event.offset()).unwrap_or(i64::MAX);
        if db.execute_now(&REGISTER, params![&*registered.user, offset])? == 0 {
            return Ok(());
        }
        let mail = Mail {
            user: registered.user,
            email: registered.email,
        };
        effects.emit(&format!("email-{}", mail.user), "welcome.requested", &mail)?;
        let delay = registered
            .follow_up_ms
            .map_or(DEFAULT_FOLLOW_UP, Duration::from_millis);
        effects.schedule(&format!("follow-up:{}", mail.user), delay, &mail)
    }
}

#[cfg(test)]
mod tests {
    use refract_reactor_sdk::testing::{DEFAULT_EPOCH_MICROS, Effect, TestReactor, json};

    use super::*;

    fn registered(user: &str) -> refract_reactor_sdk::testing::EventBuilder {
        Event::build("user.registered")
            .stream(format!("user-{user}"))
            .data(json!({"user": user, "email": format!("{user}@example.com"), "follow_up_ms": 60_000}))
    }

    #[test]
    fn a_new_user_is_welcomed_and_followed_up_once() -> Result<()> {
        let mut t = TestReactor::<Welcome>::new()?;
        let effects = t.apply([registered("u1"), registered("u1")])?;
        let [
            Effect::Emit { cause: 1, event },
            Effect::Schedule { key, due_at, .. },
        ] = &effects[..]
        else {
            panic!("one welcome and one timer: {effects:?}");
        };
        assert_eq!(
            (event.stream.as_str(), event.event_type.as_str()),
            ("email-u1", "welcome.requested")
        );
        assert_eq!(key, "follow-up:u1");
        // A minute after the event was recorded (offset 1: a second past the epoch).
        assert_eq!(*due_at, DEFAULT_EPOCH_MICROS + 1_000_000 + 60_000_000);
        let users: Vec<(String, i64)> =
            t.query_as("SELECT user_id, registered_offset FROM users")?;
        assert_eq!(users, [("u1".to_owned(), 1)]);
        Ok(())
    }
}
