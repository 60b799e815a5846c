// The SDK's errors: the SQL error a projector can react to, and the one place
// where anything thrown becomes a message for the host.

/** The broad reason a SQL request failed, as the WIT contract spells it. */
export type SqlErrorKind =
  | "denied"
  | "invalid"
  | "constraint"
  | "limit"
  | "interrupted"
  | "unknown-statement"
  | "other";

/**
 * A SQL request that the host or SQLite refused. It is thrown by `Db` methods;
 * catch it to react to, say, a constraint failure:
 *
 * ```ts
 * try {
 *   db.executeNow(CLAIM, name);
 * } catch (e) {
 *   if (e instanceof SqlError && e.kind === "constraint") return;
 *   throw e;
 * }
 * ```
 */
export class SqlError extends Error {
  /** The broad reason, to react to without parsing the message. */
  readonly kind: SqlErrorKind;

  constructor(kind: SqlErrorKind, message: string) {
    super(`${kind}: ${message}`);
    this.name = "SqlError";
    this.kind = kind;
  }
}

/**
 * What anything a projector throws says, for the operator: the message of an
 * `Error` (with its class when that says more, as in `TypeError: …`), or the
 * thrown value itself. It never throws.
 */
export function describe(thrown: unknown): string {
  try {
    if (thrown instanceof SqlError) return thrown.message;
    if (thrown instanceof Error) {
      const name = thrown.name && thrown.name !== "Error" ? `${thrown.name}: ` : "";
      return `${name}${thrown.message}`;
    }
    if (typeof thrown === "string") return thrown;
    if (typeof thrown === "bigint") return `${thrown}`;
    const json = JSON.stringify(thrown);
    return json === undefined ? String(thrown) : `thrown value ${json}`;
  } catch {
    return "a value that cannot be described was thrown";
  }
}
