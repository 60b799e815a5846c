"""{{name}}: welcomes each new user once, and follows up later.

| Event                                                              | The reactor |
|--------------------------------------------------------------------|-------------|
| `user.registered` on `user-…`, data `{user, email, follow_up_ms?}` | emits `welcome.requested` on `email-<user>` and schedules a follow-up `follow_up_ms` later (default one day) |
| the follow-up timer (`refract.timer`)                              | emits `follow_up.requested` on `email-<user>` |

A user registered twice is welcomed once: the `users` row is the reactor's state, and
its INSERT says whether the user is new. The host appends the emits exactly once, after
the batch commits; the timer is due a delay after the *event* was recorded, so a replay
makes the same decisions.
"""

from refract_sdk import Db, Event, Info, Statement
from refract_sdk.reactor import Effects, Reactor, Timer, export_reactor

# How long after a registration the follow-up is due unless the event says otherwise.
DEFAULT_FOLLOW_UP_MS = 24 * 60 * 60 * 1000

SCHEMA = """
    CREATE TABLE users (
        user_id           TEXT PRIMARY KEY,
        registered_offset INTEGER NOT NULL,
        followed_up       INTEGER NOT NULL DEFAULT 0
    );
"""

# ?1 user, ?2 offset. Changes one row for a new user, none for a known one.
REGISTER = Statement(
    """INSERT INTO users (user_id, registered_offset) VALUES (?1, ?2)
       ON CONFLICT (user_id) DO NOTHING"""
)

# ?1 user: the follow-up was requested.
FOLLOWED_UP = Statement("UPDATE users SET followed_up = 1 WHERE user_id = ?1")


class Welcome(Reactor):
    # Its own timer events are delivered whatever the subscriptions say.
    info = Info(
        "{{name}}",
        "Welcomes each new user once, and follows up later",
        event_types=["user.registered"],
    )
    emits = ["welcome.requested", "follow_up.requested"]

    def init(self, db: Db) -> None:
        db.execute_script(SCHEMA)

    def react(self, event: Event, db: Db, effects: Effects) -> None:
        timer = Timer.of(event)
        if timer is not None:
            mail = timer.payload
            db.execute_now(FOLLOWED_UP, (mail["user"],))
            effects.emit(f"email-{mail['user']}", "follow_up.requested", mail)
            return
        registered = event.data
        if db.execute_now(REGISTER, (registered["user"], event.offset)) == 0:
            return
        mail = {"user": registered["user"], "email": registered["email"]}
        effects.emit(f"email-{mail['user']}", "welcome.requested", mail)
        delay = registered.get("follow_up_ms", DEFAULT_FOLLOW_UP_MS)
        effects.schedule(f"follow-up:{mail['user']}", delay, mail)


# componentize-py builds the class bound to `WitWorld` into the component.
WitWorld = export_reactor(Welcome)
