// The {{name}} projector: how many events each stream has, and the last one seen.

import { projector, Statement } from "refract-sdk";

const COUNT = new Statement(
  `INSERT INTO streams (stream, events, last_type, last_offset) VALUES (?1, 1, ?2, ?3)
   ON CONFLICT (stream) DO UPDATE SET
       events = events + 1,
       last_type = excluded.last_type,
       last_offset = excluded.last_offset`,
);

export default projector({
  name: "{{name}}",
  description: "Events per stream, with the last event's type and offset",
  // Every event; narrow with event types (e.g. ["order.placed"]) or stream prefixes.
  eventTypes: [],
  streamPrefixes: [],

  init(db) {
    db.executeScript(`
      CREATE TABLE streams (
          stream      TEXT PRIMARY KEY,
          events      INTEGER NOT NULL,
          last_type   TEXT NOT NULL,
          last_offset INTEGER NOT NULL
      );
    `);
  },

  handle(event, db) {
    db.execute(COUNT, event.stream, event.type, event.offset);
  },
});
