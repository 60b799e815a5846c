// The {{name}} reactor: welcomes each new user once, and follows up later.
//
// | Event                                                              | The reactor |
// |--------------------------------------------------------------------|-------------|
// | `user.registered` on `user-…`, data `{user, email, follow_up_ms?}` | emits `welcome.requested` on `email-<user>` and schedules a follow-up `follow_up_ms` later (default one day) |
// | the follow-up timer (`refract.timer`)                              | emits `follow_up.requested` on `email-<user>` |
//
// A user registered twice is welcomed once: the `users` row is the reactor's state,
// and its INSERT says whether the user is new. The host appends the emits exactly once,
// after the batch commits; the timer is due a delay after the *event* was recorded, so
// a replay makes the same decisions.

import { reactor, Statement, Timer } from "refract-sdk";

/** How long after a registration the follow-up is due unless the event says otherwise. */
export const DEFAULT_FOLLOW_UP_MS = 24 * 60 * 60 * 1000;

/** `user.registered`. */
interface Registered {
  user: string;
  email: string;
  follow_up_ms?: number | bigint;
}

/** The data of both emits, and the follow-up timer's payload. */
interface Mail {
  user: string;
  email: string;
}

/** ?1 user, ?2 offset. Changes one row for a new user, none for a known one. */
const REGISTER = new Statement(
  `INSERT INTO users (user_id, registered_offset) VALUES (?1, ?2)
   ON CONFLICT (user_id) DO NOTHING`,
);

/** ?1 user: the follow-up was requested. */
const FOLLOWED_UP = new Statement(`UPDATE users SET followed_up = 1 WHERE user_id = ?1`);

export default reactor({
  name: "{{name}}",
  description: "Welcomes each new user once, and follows up later",
  // Its own timer events are delivered whatever the subscriptions say.
  eventTypes: ["user.registered"],
  emits: ["welcome.requested", "follow_up.requested"],

  init(db) {
    db.executeScript(`
      CREATE TABLE users (
          user_id           TEXT PRIMARY KEY,
          registered_offset INTEGER NOT NULL,
          followed_up       INTEGER NOT NULL DEFAULT 0
      );
    `);
  },

  react(event, db, effects) {
    const timer = Timer.of<Mail>(event);
    if (timer !== undefined) {
      const mail = timer.payload;
      db.executeNow(FOLLOWED_UP, mail.user);
      effects.emit(`email-${mail.user}`, "follow_up.requested", mail);
      return;
    }
    const registered = event.data<Registered>();
    if (db.executeNow(REGISTER, registered.user, event.offset) === 0n) return;
    const mail: Mail = { user: registered.user, email: registered.email };
    effects.emit(`email-${mail.user}`, "welcome.requested", mail);
    effects.schedule(`follow-up:${mail.user}`, registered.follow_up_ms ?? DEFAULT_FOLLOW_UP_MS, mail);
  },
});
