import assert from "node:assert/strict";
import { test } from "node:test";

import { parseJson, stringifyJson } from "../src/json.ts";
import { event, TestProjector } from "../src/testing.ts";
import { projector } from "../src/index.ts";

test("integers beyond 2^53 come back exact, as bigints", () => {
  assert.deepEqual(parseJson('{"id": 9007199254740993, "n": 12, "neg": -123456789012345678901}'), {
    id: 9007199254740993n,
    n: 12,
    neg: -123456789012345678901n,
  });
  // 2^53 - 1 is still a safe number; floats with many digits stay floats.
  assert.deepEqual(parseJson("[9007199254740991, 1234567890123456.5, 12345678901234567e2]"), [
    9007199254740991,
    1234567890123456.5,
    12345678901234567e2,
  ]);
});

test("everything else parses exactly as JSON.parse does", () => {
  const samples = [
    '{"a": "digits 12345678901234567890 in a string", "b": [true, false, null, 1.5e-3, -0]}',
    '{"esc": "quote \\" backslash \\\\ unicode \\u00e9 \\ud83d\\ude00", "k": {}}',
    '  [ [], {"__proto__": 1}, "", 0 ]  ',
    '"1234567890123456789012"',
  ];
  for (const text of samples) {
    const ours = parseJson(text);
    assert.deepEqual(ours, JSON.parse(text), text);
  }
  const proto = parseJson('{"__proto__": {"x": 9999999999999999999}}') as Record<string, unknown>;
  assert.equal(Object.getPrototypeOf(proto), Object.prototype);
  assert.deepEqual(Object.keys(proto), ["__proto__"]);
});

test("malformed JSON is a SyntaxError on both paths", () => {
  for (const text of ["{", '{"a" 1}', "[1,]", "12345678901234567 x", '"unterminated 12345678901234567', "tru"]) {
    assert.throws(() => parseJson(text), SyntaxError, text);
  }
  assert.throws(() => parseJson("[".repeat(600) + "12345678901234567" + "]".repeat(600)), /nesting deeper/);
});

test("stringifyJson writes bigints as exact integers", () => {
  const value = { big: 2n ** 64n, s: "\u0000bigint:0\u0000", list: [1n, 2] };
  const text = stringifyJson(value);
  assert.equal(text, '{"big":18446744073709551616,"s":"\\u0000bigint:0\\u0000","list":[1,2]}');
  assert.deepEqual(parseJson(text), { big: 2n ** 64n, s: "\u0000bigint:0\u0000", list: [1, 2] });
});

test("a value past 2^53 in event data reaches the read model exactly", async () => {
  const t = await TestProjector.create(
    projector({
      name: "exact",
      description: "",
      init: (db) => db.executeScript("CREATE TABLE t (amount INTEGER)"),
      handle(e, db) {
        db.executeScript(`INSERT INTO t VALUES (${e.data<{ amount: bigint }>().amount})`);
      },
    }),
  );
  t.apply([event("x", { dataJson: '{"amount": 9007199254740993}' })]);
  assert.deepEqual(t.rows("SELECT amount FROM t"), [[9007199254740993n]]);
});
