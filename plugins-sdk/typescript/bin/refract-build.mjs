#!/usr/bin/env node
// Builds a TypeScript projector (or, with --reactor, a reactor) into a
// WebAssembly component:
//
//   refract-build src/index.ts --out dist/my-projector.wasm --wit ../refract/wit
//   refract-build src/index.ts --reactor --out dist/my-saga.wasm --wit ../refract/wit
//
// 1. esbuild bundles the projector (its default export) and the SDK's component
//    glue into one ES module, with the contract's imports left to the engine.
// 2. componentize-js embeds that module in the SpiderMonkey engine and makes a
//    component of the `projector` world (or the `reactor` world), with every
//    engine feature that reaches
//    outside the sandbox switched off (no fetch, no clocks, no randomness):
//    the component imports only the contract and the little WASI the engine
//    itself needs (stdio, for error messages), all of which the host links.
//
// Both tools are pinned in the SDK's package.json and installed by `npm ci`;
// nothing is downloaded at build time.

import { mkdir, readFile, writeFile } from "node:fs/promises";
import { basename, dirname, extname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

/**
 * What this SDK builds, by kind: the WIT world, the contract (its package, its
 * folder in Refract's `wit/` and the file that declares it), the SDK's glue for
 * it, the exports of the world, and the contract modules left to the engine.
 */
const KINDS = {
  projector: {
    world: "projector",
    contract: "refract:projector@0.2.0",
    dir: "projector-0.2",
    file: "projector.wit",
    glue: "../src/component.ts",
    exportWith: "exportProjector",
    exports: ["metadata", "init", "handle"],
    external: ["refract:projector/*"],
  },
  // The reactor world includes the projector world of refract:projector@0.1.0,
  // which its folder reaches through `deps/`.
  reactor: {
    world: "reactor",
    contract: "refract:reactor@0.1.0",
    dir: "reactor",
    file: "reactor.wit",
    glue: "../src/reactor-component.ts",
    exportWith: "exportReactor",
    exports: ["metadata", "init", "handle", "reactorInfo"],
    external: ["refract:projector/*", "refract:reactor/*"],
  },
};

/**
 * componentize-js engine features a projector never needs. A projector reaches
 * only its read model and the log: no `fetch` (http, fetch-event), no clock (it
 * takes time from its events), no randomness (a replay must be identical).
 * `stdio` stays on: an uncaught error's message goes to stderr, which the host
 * captures into the trap's report.
 */
const DISABLED_FEATURES = ["http", "fetch-event", "clocks", "random"];

const usage = `usage: refract-build <entry.ts> [--reactor] --out <component.wasm> --wit <wit dir>

Bundles the projector exported by default from <entry.ts> and builds it into a
WebAssembly component for Refract. --wit is the Refract source tree's wit/ folder
(the build uses its ${KINDS.projector.dir}/ contract, ${KINDS.projector.contract}), or that contract's own folder.
--reactor builds a reactor (a \`reactor({...})\` default export) against the
${KINDS.reactor.contract} contract (wit/${KINDS.reactor.dir}/) instead.`;

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      out: { type: "string", short: "o" },
      wit: { type: "string" },
      reactor: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(usage);
    return;
  }
  if (positionals.length !== 1 || !values.out || !values.wit) {
    fail(usage);
  }
  const kind = KINDS[values.reactor ? "reactor" : "projector"];
  const entry = resolve(positionals[0]);
  const out = resolve(values.out);
  const wit = await contractDir(resolve(values.wit), kind);
  const bundle = join(dirname(out), `${basename(out, extname(out))}.js`);
  await mkdir(dirname(out), { recursive: true });

  const started = performance.now();
  await bundleProjector(entry, bundle, kind);
  const bundled = performance.now();
  const component = await componentizeBundle(bundle, wit, kind);
  await writeFile(out, component);
  const done = performance.now();
  console.error(
    `refract-build: ${out} (${(component.length / 1048576).toFixed(1)} MiB) ` +
      `in ${((done - started) / 1000).toFixed(1)} s ` +
      `(bundle ${((bundled - started) / 1000).toFixed(1)} s, componentize ${((done - bundled) / 1000).toFixed(1)} s)`,
  );
}

/**
 * The folder holding the contract this SDK speaks for `kind`: for a projector
 * `<wit>/projector-0.2`, for a reactor `<wit>/reactor`, or `<wit>` itself when
 * it is that folder. Anything else fails with what to fix, rather than
 * building a component against a contract the SDK does not match.
 */
async function contractDir(wit, kind) {
  for (const dir of [join(wit, kind.dir), wit]) {
    const text = await readFile(join(dir, kind.file), "utf8").catch(() => "");
    if (new RegExp(`^\\s*package\\s+${kind.contract.replace(/[.]/g, "\\.")}\\s*;`, "m").test(text)) return dir;
  }
  fail(
    `refract-build: ${wit} holds no ${kind.contract} contract (looked for ${join(wit, kind.dir, kind.file)}); ` +
      "pass --wit the wit/ folder of a Refract source tree that has it",
  );
}

/** Bundles the projector (or reactor) and the SDK's component glue for it into one ES module at `bundle`. */
async function bundleProjector(entry, bundle, kind) {
  const esbuild = await import("esbuild");
  const glue = fileURLToPath(new URL(kind.glue, import.meta.url));
  const source = [
    `import definition from ${JSON.stringify(entry)};`,
    `import { ${kind.exportWith} } from ${JSON.stringify(glue)};`,
    `export const { ${kind.exports.join(", ")} } = ${kind.exportWith}(definition);`,
  ].join("\n");
  try {
    await esbuild.build({
      stdin: { contents: source, resolveDir: dirname(entry), sourcefile: "refract-entry.js", loader: "js" },
      bundle: true,
      format: "esm",
      platform: "neutral",
      mainFields: ["module", "main"],
      target: "es2022",
      external: kind.external,
      outfile: bundle,
      logLevel: "silent",
      legalComments: "none",
    });
  } catch (e) {
    const messages = (e.errors ?? []).map((m) => {
      const at = m.location ? `${m.location.file}:${m.location.line}:${m.location.column}: ` : "";
      return `  ${at}${m.text}`;
    });
    fail(`refract-build: bundling ${entry} failed:\n${messages.join("\n") || e.message}`);
  }
}

/** Makes a component of the `projector` (or `reactor`) world from the bundled module. */
async function componentizeBundle(bundle, wit, kind) {
  const { componentize } = await import("@bytecodealliance/componentize-js");
  try {
    const { component } = await componentize({
      sourcePath: bundle,
      witPath: wit,
      worldName: kind.world,
      disableFeatures: DISABLED_FEATURES,
    });
    return component;
  } catch (e) {
    fail(`refract-build: componentize-js failed on ${bundle}:\n${e.message ?? e}`);
  }
}

function fail(message) {
  console.error(message);
  process.exit(1);
}

await main();
