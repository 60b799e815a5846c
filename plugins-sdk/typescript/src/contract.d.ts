// The component imports of `wit/projector-0.2/projector.wit`
// (`refract:projector@0.2.0`) as componentize-js presents them to JavaScript. A
// function returning `result<T, E>` returns `T` or throws an error whose
// `payload` is `E`.

declare module "refract:projector/sql@0.2.0" {
  type WireValue = import("./values.ts").WireValue;
  export function prepare(sql: string): number;
  export function executePacked(writes: import("./packed.ts").WriteBatch): void;
  export function execute(statement: number, params: WireValue[]): bigint;
  export function query(
    statement: number,
    params: WireValue[],
  ): { columns: string[]; rows: WireValue[][] };
  export function executeScript(sql: string): void;
}

declare module "refract:projector/log@0.2.0" {
  export function write(level: import("./backend.ts").Level, message: string): void;
}

// The reactor world (`wit/reactor/reactor.wit`, `refract:reactor@0.1.0`)
// includes the projector world of `refract:projector@0.1.0`: the same calls,
// except that deferred writes go as a list of records (`execute-batch`), not
// packed.

declare module "refract:projector/sql@0.1.0" {
  type WireValue = import("./values.ts").WireValue;
  export function prepare(sql: string): number;
  export function executeBatch(writes: { statement: number; params: WireValue[] }[]): void;
  export function execute(statement: number, params: WireValue[]): bigint;
  export function query(
    statement: number,
    params: WireValue[],
  ): { columns: string[]; rows: WireValue[][] };
  export function executeScript(sql: string): void;
}

declare module "refract:projector/log@0.1.0" {
  export function write(level: import("./backend.ts").Level, message: string): void;
}

declare module "refract:reactor/emit@0.1.0" {
  /** Throws an error whose `payload` is the contract's `effect-error`, `{ message }`. */
  export function emit(cause: bigint, event: import("./reactor.ts").NewEvent): void;
}

declare module "refract:reactor/timers@0.1.0" {
  /** Each throws an error whose `payload` is the contract's `effect-error`, `{ message }`. */
  export function schedule(cause: bigint, key: string, delayMs: bigint, payload: string): void;
  export function cancel(key: string): void;
}
