// Write Refract projectors in TypeScript.
//
// A projector turns events from Refract's log into its own SQLite read model.
// A reactor (a saga) also reacts by emitting events and scheduling timers.
// Either is built into a WebAssembly component (with componentize-js) that the
// host runs sandboxed. This package hides the component plumbing: declare a
// `projector({...})`, export it as the module's default, and build with
// `refract-build`. `refract-sdk/testing` runs the same code natively against
// an in-memory SQLite.
//
// Layout:
// - `projector.ts`: `projector()`, the `Projector` definition, subscriptions.
// - `reactor.ts`: `reactor()`, the `Reactor` definition, `Effects`, `Timer`.
// - `event.ts`: `Event`, a lazy view of one event in the packed batch.
// - `json.ts`: JSON parsing that keeps integers beyond 2^53 exact.
// - `db.ts`: `Db` and `Statement`: deferred writes, immediate writes, queries.
// - `rows.ts`: `Rows` and `Row`, query results with strict typed accessors.
// - `values.ts`: SQL parameter and column values.
// - `errors.ts`: `SqlError`, and how a thrown value becomes a message.
// - `log.ts`: logging into the host's log.
// - `batch.ts` (internal): the loop behind the exports, shared by both targets.
// - `backend.ts` (internal): the seam to where SQL runs.
// - `glue.ts` (internal): the contract's imports behind the seam, for both glues.
// - `component.ts`: a projector's component glue (imports the contract; used by the build).
// - `reactor-component.ts`: a reactor's component glue (`refract-build --reactor`).
// - `testing.ts`: the native harness (`TestProjector`, `TestReactor`).

export { Db, Statement } from "./db.ts";
export { Event } from "./event.ts";
export { SqlError, type SqlErrorKind } from "./errors.ts";
export { parseJson, stringifyJson } from "./json.ts";
export { log } from "./log.ts";
export { type EventField, MAX_NAME_LEN, type Projector, projector } from "./projector.ts";
export {
  EffectRefused,
  Effects,
  type EmitOptions,
  type Reactor,
  reactor,
  TIMER_EVENT_TYPE,
  Timer,
  timerStream,
} from "./reactor.ts";
export { type Column, Row, Rows } from "./rows.ts";
export { type Param, Real, real, type SqlValue } from "./values.ts";
