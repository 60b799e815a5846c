#!/usr/bin/env node
// Writes the TypeScript scaffolds' lockfiles (the projector's and the reactor's)
// from the balances-ts example's:
//
//   node plugins-sdk/typescript/scripts/sync-template-lockfile.mjs
//
// A new project pins exactly the toolchain the example is tested with. Both
// depend on nothing but the SDK, so their lockfiles differ only in the root
// package (its name) and the path to the SDK, which `refract new` fills in
// (`{{name}}`, `{{sdk_dir}}`). Run it after changing the SDK's dependencies and
// refreshing the example's lockfile (`rm package-lock.json && npm install` in
// example-plugins/balances-ts); `cargo test --test sdk_typescript` checks that
// the two agree.

import { readFile, writeFile } from "node:fs/promises";

const root = new URL("../../../", import.meta.url);
const example = new URL("example-plugins/balances-ts/package-lock.json", root);
const templates = ["typescript", "typescript-reactor"].map(
  (folder) => new URL(`plugins-sdk/templates/${folder}/package-lock.json.tmpl`, root),
);

/** The example's path to the SDK, and the scaffold's. */
const EXAMPLE_SDK = "file:../../plugins-sdk/typescript";
const TEMPLATE_SDK = "file:{{sdk_dir}}/typescript";

const lock = JSON.parse(await readFile(example, "utf8"));
const sdk = lock.packages["node_modules/refract-sdk"];
if (lock.packages[""].dependencies?.["refract-sdk"] !== EXAMPLE_SDK || sdk?.resolved !== EXAMPLE_SDK) {
  throw new Error(`the example must depend on the SDK as ${EXAMPLE_SDK}`);
}
lock.name = "{{name}}";
lock.packages[""] = {
  name: "{{name}}",
  version: "0.1.0",
  dependencies: { "refract-sdk": TEMPLATE_SDK },
};
sdk.resolved = TEMPLATE_SDK;
for (const template of templates) {
  await writeFile(template, `${JSON.stringify(lock, null, 2)}\n`);
  console.error(`wrote ${template.pathname}`);
}
