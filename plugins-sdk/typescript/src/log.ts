// Logging into the host's structured log, tagged with the projector's name and
// version. `console.log` goes nowhere in the sandbox (stdout is discarded);
// this is the way to talk to the operator.

import type { Level } from "./backend.ts";

type Sink = (level: Level, message: string) => void;

let sink: Sink = (level, message) => {
  const console = (globalThis as unknown as { console?: { error(text: string): void } }).console;
  console?.error(`[projector ${level}] ${message}`);
};

/** @internal Where log lines go: the host's `log` import in a component, stderr natively. */
export function setLogSink(next: Sink): void {
  sink = next;
}

function write(level: Level, message: string): void {
  sink(level, message);
}

/** Writes lines to the host's log. The host caps a message's length and the lines per call. */
export const log = {
  /** Very detailed tracing. */
  trace: (message: string): void => write("trace", message),
  /** Detail for debugging. */
  debug: (message: string): void => write("debug", message),
  /** Normal operation. */
  info: (message: string): void => write("info", message),
  /** Something unexpected that the projector handled. */
  warn: (message: string): void => write("warn", message),
  /** Something failed. */
  error: (message: string): void => write("error", message),
};
