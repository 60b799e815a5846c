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
